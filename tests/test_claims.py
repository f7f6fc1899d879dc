"""reporting/claims.py settles a claim from the cells it reads: the verdict follows the
cells (a claim that holds stops holding when one backend's cell says otherwise), a claim
without its cells is left out, and the answer's action is the verdict's."""

from __future__ import annotations

from reporting import claims
from reporting.claims import DOES_NOT_HOLD, HOLDS, IN_PART, Seen


def _cells(cause: str, sides: dict[str, dict[str, str]], staleness: str = "") -> list[Seen]:
    """{app: {backend: verdict}} as cells with no observations."""
    return [Seen(cause, app, backend, verdict, staleness, {}) for app, by_backend in sides.items()
            for backend, verdict in by_backend.items()]


def _settled(cells: dict[str, list[Seen]]) -> dict[int, claims.Settled]:
    return {s.number: s for s in claims.settle_all(cells, {})}


def test_a_claim_holds_in_part_when_one_backend_disagrees() -> None:
    everywhere = {"sqlite": "HOLDS", "postgresql": "HOLDS", "mariadb": "HOLDS"}
    claim_9 = _settled({"myth_flush": _cells("myth_flush", {"claim": everywhere, "cure": everywhere})})[9]
    assert claim_9.verdict == HOLDS and claim_9.action == "kept"
    one_off = {**everywhere, "mariadb": "DOES NOT HOLD"}
    claim_9 = _settled({"myth_flush": _cells("myth_flush", {"claim": one_off, "cure": everywhere})})[9]
    assert claim_9.verdict == IN_PART and claim_9.action == "corrected"
    assert claim_9.statements[0].observed == {"sqlite": True, "postgresql": True, "mariadb": False}
    assert claim_9.statements[0].mark == "depends on the backend"
    nowhere = {backend: "DOES NOT HOLD" for backend in everywhere}
    claim_9 = _settled({"myth_flush": _cells("myth_flush", {"claim": nowhere, "cure": everywhere})})[9]
    assert claim_9.verdict == DOES_NOT_HOLD and claim_9.action == "dropped"


def test_a_claim_reads_its_cells_verdict_and_staleness() -> None:
    broken = {"sqlite": "STALE", "postgresql": "STALE", "mariadb": "STALE"}
    fixed = {"sqlite": "FRESH", "postgresql": "FRESH", "mariadb": "FRESH"}
    held_in_orm = _settled({"global_cache": _cells("global_cache", {"broken": broken, "fixed": fixed}, "orm")})[1]
    assert held_in_orm.verdict == HOLDS
    in_database = _settled({"global_cache": _cells("global_cache", {"broken": broken, "fixed": fixed}, "database")})[1]
    assert in_database.verdict == IN_PART  # stale, but not from ORM objects: the mechanism is not the claim's


def test_a_claim_without_its_cells_or_measurements_is_left_out() -> None:
    fixed = {"sqlite": "FRESH"}
    settled = _settled({"uncommitted": _cells("uncommitted", {"broken": {"sqlite": "LOST"}, "fixed": fixed})})
    assert list(settled) == [3]
    assert _settled({}) == {}
    assert 7 not in _settled({"myth_remove": _cells("myth_remove", {"claim": {"sqlite": "HOLDS"}})})  # needs expire_all too
