"""`make doctor`: what the stale-data doctor reported in each scenario, broken beside fixed.

The doctor is installed identically in both apps (lab mode's extension hook), so what it
reports is the only thing this table adds to the verdict matrix. A cell is as wanted when the
broken app is reported with its own cause wherever the bug shows (its verdict is not FRESH or
N/A) and with no other cause but the second ones declared true below, and the fixed app is
reported clean.
"""

from __future__ import annotations

from lab.harness.runner import CellResult
from lab.harness.verdicts import FRESH, NOT_APPLICABLE

BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mariadb": "MariaDB"}

# A broken app is reported with its own cause and nothing else, except where a second finding
# is true of that app and follows from its bug (README.md, "The doctor", says the same).
SECOND_CAUSES: dict[str, dict[str, str]] = {
    "pool_across_fork": {
        "scoped_session_not_removed": (
            "under load the server connection the workers share breaks; Flask-SQLAlchemy's remove() at a "
            "request's teardown then fails on it, so that Session really stays in the registry and a later "
            "request, in an app context at the same address, is handed it"),
    },
}


def unexpected_causes(cause: str, found: list[str]) -> list[str]:
    """What the doctor reported of the broken app of `cause` beyond its cause and its declared seconds."""
    allowed = {cause, *SECOND_CAUSES.get(cause, {})}
    return sorted(set(found) - allowed)


def _cell(broken: CellResult | None, fixed: CellResult | None) -> str:
    if broken is None or broken.verdict == NOT_APPLICABLE:
        return "N/A"
    found = ", ".join(broken.doctor or []) or "nothing"
    if fixed is None:
        return f"{found} · fixed: ?"
    return f"{found} · fixed: {', '.join(fixed.doctor or []) or 'clean'}"


def doctor_table(results: list[CellResult], backends: list[str]) -> str:
    by_cell = {(c.cause, c.app, c.backend): c for c in results}
    versions = {c.backend: c.server_version for c in results if c.server_version}
    causes = list(dict.fromkeys(c.cause for c in results))
    header = "| cause | " + " | ".join(versions.get(b, BACKEND_NAMES.get(b, b)) for b in backends) + " |"
    lines = [header, "|" + "---|" * (len(backends) + 1)]
    for cause in causes:
        cells = [_cell(by_cell.get((cause, "broken", b)), by_cell.get((cause, "fixed", b))) for b in backends]
        lines.append(f"| {cause} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def doctor_problems(results: list[CellResult]) -> list[str]:
    """Every cell where the doctor missed the broken app's own cause or reported the fixed app."""
    problems = []
    for cell in results:
        if cell.verdict == NOT_APPLICABLE:
            continue
        where = f"{cell.cause} | {cell.app} | {cell.backend}"
        if cell.doctor is None:
            problems.append(f"{where}: the doctor wrote nothing (was it installed?)")
        elif cell.app == "fixed" and cell.doctor:
            problems.append(f"{where}: the fixed app was reported with {', '.join(cell.doctor)}")
        elif cell.app == "broken" and cell.verdict != FRESH and cell.cause not in cell.doctor:
            problems.append(f"{where}: the bug showed ({cell.verdict}) but the doctor reported "
                            f"{', '.join(cell.doctor) or 'nothing'}")
        elif cell.app == "broken" and unexpected_causes(cell.cause, cell.doctor):
            problems.append(f"{where}: the doctor also reported {', '.join(unexpected_causes(cell.cause, cell.doctor))}, "
                            f"which is not this app's bug (SECOND_CAUSES lists the ones that are true)")
    return problems
