"""global_cache: list pages kept in a module-level dict serve ORM objects of long-gone sessions.

Served by gunicorn with two sync workers, W1 and W2, each with its own cache (its own process).
Steps (every step steered: all workers but the one it needs are held busy): bob reads the
newest row on W1, then on W2 (each worker caches that page); alice edits its label on W2
(200, committed); bob reads again on W2, then on W1; the auditor reads the row from the
database.

Staleness is in the ORM: W1's cache holds the Transaction objects its first request loaded.
When that request's session was removed they became detached, with their loaded state kept
and never reloaded, so W1 keeps answering version 1 after version 2 was acknowledged: STALE.

The same bug also fails deterministically on W2: the broken app "refreshes" its cached pages
inside the edit's session, and that session's commit expires them (expire_on_commit); once
the session is closed, reading an expired attribute of a detached object raises
DetachedInstanceError, so W2's next read is a 500 whose log names it (an observation cited in
the proof). The verdict is STALE: that is what every worker that did not serve the edit shows,
and the 500 is a consequence of the same cached objects. The fixed app keeps nothing between
requests: both reads after the edit see version 2.
"""

from __future__ import annotations

from typing import Any

from lab.harness.probes import read_logged, short_error
from lab.harness.scenario import Cause, Scenario
from lab.harness.steering import Steering
from lab.harness.steps import audit_row, edit_label
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, LOST, STALE, Judgement

CAUSE = Cause("global_cache", "ORM objects cached across requests: old labels after an edit, then DetachedInstanceError")

NEW_LABEL = "checked by alice"


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=2)
    alice, bob = s.actor("alice", server), s.actor("bob", server)
    steer = Steering(s, server, slots=2, name="worker")
    w1, w2 = steer.slots
    observations: dict[str, Any] = {"workers": {"w1": w1, "w2": w2}, "before": {}, "after": {}}
    for name, worker in (("w1", w1), ("w2", w2)):
        steer.only(worker)
        observations["before"][name] = read_logged(s, bob, server, f"the row as seeded, version 1 (now cached on {name})")
    row_id, version = observations["before"]["w2"].get("id"), observations["before"]["w2"].get("version")
    if row_id is None:
        steer.release_all()
        observations["ack"] = {"status": 0}
        return observations
    steer.only(w2)
    ack = edit_label(s, alice, row_id, NEW_LABEL, version, "200 with version 2, committed")
    observations["ack"] = ack
    want = f"version {ack.get('version')}, label {NEW_LABEL!r}"
    for name, worker in (("w2", w2), ("w1", w1)):  # the editor's worker first: its cache was re-filled
        steer.only(worker)
        observations["after"][name] = read_logged(s, bob, server, want)
    # Still steered to W1, the worker that did not serve the edit: the page as bob's browser shows it.
    s.screenshot(server, "after-edit", "the list page on W1 right after alice's edit was acknowledged")
    steer.release_all()
    observations["database"] = audit_row(s, s.engine(), row_id, want)
    return observations


def judge(observations: dict[str, Any]) -> Judgement:
    ack, workers = observations["ack"], observations["workers"]
    if ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the edit was not acknowledged (HTTP {ack['status']})")
    database = observations["database"]
    if database["version"] < ack["version"]:
        return Judgement(LOST, f"the edit was acknowledged as version {ack['version']}, but the database has "
                               f"version {database['version']}")
    reads = {f"{when} {name}": seen for when in ("before", "after") for name, seen in observations[when].items()}
    misplaced = [label for label, seen in reads.items() if seen["served_by"] != workers[label.split()[1]]]
    if misplaced or ack["served_by"] != workers["w2"]:
        return Judgement(INCONCLUSIVE, f"steering failed: {', '.join(misplaced) or 'the edit'} not on the worker it needed")
    if any(seen["status"] != 200 for seen in observations["before"].values()):
        return Judgement(INCONCLUSIVE, "a read before the edit failed")
    after = observations["after"]
    failed = {name: seen for name, seen in after.items() if seen["status"] != 200}
    detached = [name for name, seen in failed.items() if "DetachedInstanceError" in seen.get("logged_error", "")]
    failures = "; ".join(f"{name.upper()} ({workers[name]})" + (", whose cache the edit had re-filled," if name == "w2" else "")
                         + f" answered HTTP {seen['status']}"
                         + (f" ({_exception_name(seen['logged_error'])})" if seen.get("logged_error") else "")
                         for name, seen in failed.items())
    stale = [name for name, seen in after.items() if seen["status"] == 200 and seen["version"] < ack["version"]]
    if stale:
        seen = after[stale[0]]
        also = f"; and {failures}" if failures else ""
        untouched = " without a database connection" if seen.get("db_conn") == "none" else ""
        return Judgement(STALE, f"bob on {stale[0].upper()} ({workers[stale[0]]}) saw version {seen['version']} after "
                                f"version {ack['version']} was acknowledged, answered{untouched} from detached objects "
                                f"in the worker's cache{also}", "orm")
    if failed:
        kind = "DetachedInstanceError" if detached else "an error"
        return Judgement(CRASH, f"after the edit, {kind}: {failures}")
    return Judgement(FRESH, f"bob saw version {ack['version']} on both workers after the edit")


def _exception_name(logged: str) -> str:
    """'sqlalchemy.orm.exc.DetachedInstanceError: Instance ...' -> 'DetachedInstanceError'."""
    return short_error(logged).split(":")[0]
