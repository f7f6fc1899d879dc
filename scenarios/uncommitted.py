"""uncommitted: an edit answered 200 that no worker, and not the database, ever shows.

Steps: alice reads the newest row and edits its label; with two gunicorn workers, bob reads
on each worker in turn (the other one held busy, so we know which one answers); the auditor
reads the row straight from the database. Staleness: none in the ORM and none in a snapshot:
the write itself is gone (the rollback at the end of alice's request discarded it).
"""

from __future__ import annotations

from typing import Any

from lab.harness.scenario import Cause, Scenario
from lab.harness.steps import audit_row, edit_label, read_newest
from lab.harness.verdicts import FRESH, INCONCLUSIVE, LOST, STALE, Judgement

CAUSE = Cause("uncommitted", "an edit is acknowledged, then the page and the database show the old label")

NEW_LABEL = "checked by alice"


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=2)
    alice, bob = s.actor("alice", server), s.actor("bob", server)
    before = read_newest(s, alice, "the row as seeded, version 1")
    ack = edit_label(s, alice, before["id"], NEW_LABEL, before["version"], "200 with version 2")
    # Steering: with worker X held, bob's read must go to worker Y; then hold Y (the only free
    # one), release X, and bob's next read must go to X. No request is left to chance.
    first = s.hold(server, "first")
    s.note(f"worker {first.served_by} is held busy, so the next request goes to the other worker")
    reads = [read_newest(s, bob, f"version {ack.get('version')}, label {NEW_LABEL!r}")]
    second = s.hold(server, "second")
    first.release()
    s.note(f"worker {second.served_by} is now held and {first.served_by} released")
    reads.append(read_newest(s, bob, f"version {ack.get('version')}, label {NEW_LABEL!r}"))
    second.release()
    database = audit_row(s, s.engine(), before["id"], f"version {ack.get('version')}, label {NEW_LABEL!r}")
    return {"before": before, "ack": ack, "reads": reads, "database": database}


def judge(observations: dict[str, Any]) -> Judgement:
    ack, database = observations["ack"], observations["database"]
    if ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the edit was not acknowledged (HTTP {ack['status']})")
    if database["version"] < ack["version"]:
        return Judgement(LOST, f"the edit was acknowledged as version {ack['version']}, but the database "
                               f"still has version {database['version']} with label {database['label']!r}")
    workers = sorted({r["served_by"].split("/")[0] for r in observations["reads"]})
    if len(workers) < 2:
        return Judgement(INCONCLUSIVE, f"both reads were served by worker {workers}; steering failed")
    stale = [r for r in observations["reads"] if r["status"] != 200 or r["version"] < ack["version"]]
    if stale:
        r = stale[0]
        return Judgement(STALE, f"a reader on {r['served_by']} saw version {r.get('version')} after version "
                                f"{ack['version']} was acknowledged", "database")
    return Judgement(FRESH, f"version {ack['version']} was in the database and seen by both workers ({', '.join(workers)})")
