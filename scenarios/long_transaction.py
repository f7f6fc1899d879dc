"""long_transaction: a REPEATABLE READ transaction that outlives the request serves old rows.

Steps: one gunicorn worker with one thread (so every request meets the same thread, and in the
broken app the same kept reader). alice reads the newest row (the broken reader's transaction
takes its snapshot here); bob edits its label (committed by the request's own session); the
auditor reads the row straight from the database; alice reads again. The second read must
come from the thread of the first one, or the run is INCONCLUSIVE.
Staleness: in the database. The broken app loads new ORM objects on every request (nothing
holds the previous page's objects), but from the snapshot its open transaction took at
alice's first read: REPEATABLE READ on PostgreSQL (set by the app) and MariaDB (the default),
the WAL snapshot on SQLite. The transaction log shows it: no BEGIN for alice's second read.

Extra observations (PostgreSQL and MariaDB; not part of the verdict): the same kind of long
transaction under READ COMMITTED, straight through the ORM. The object the session still holds
keeps its old attributes when queried again (the ORM does not overwrite loaded attributes), but
a column query, a query for a row the session does not hold, and `populate_existing` read the
new committed values. SQLite has no READ COMMITTED level: every transaction reads one snapshot.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select, update
from sqlalchemy.orm import Session

from lab.harness.scenario import Cause, Scenario
from lab.harness.steps import audit_row, edit_label, read_newest
from lab.harness.verdicts import FRESH, INCONCLUSIVE, STALE, Judgement
from lab.models import Transaction

CAUSE = Cause("long_transaction", "a page keeps showing the row as it was at the worker thread's first page view")

NEW_LABEL = "checked by bob"
WRITER_LABEL = "changed by the writer"


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=1, threads=1)
    alice, bob = s.actor("alice", server), s.actor("bob", server)
    before = read_newest(s, alice, "the row as seeded, version 1 (the broken reader's snapshot starts here)")
    ack = edit_label(s, bob, before["id"], NEW_LABEL, before["version"], "200 with version 2")
    database = audit_row(s, s.engine(), before["id"], f"version {ack.get('version')}, label {NEW_LABEL!r}")
    after = read_newest(s, alice, f"version {ack.get('version')}, label {NEW_LABEL!r}")
    s.screenshot(server, "after-edit", "the list page on the one worker thread right after bob's edit was acknowledged")
    after["transaction_events"] = s.steps[-1].transactions
    observations: dict[str, Any] = {"before": before, "ack": ack, "database": database, "after": after}
    if s.backend == "sqlite":
        s.note("no READ COMMITTED demonstration on SQLite: it has no such level (a transaction reads one snapshot)")
    else:
        observations["read_committed"] = read_committed_demo(s, s.engine())
    return observations


def read_committed_demo(s: Scenario, auditor: Engine) -> dict[str, Any]:
    """What stays old in one long READ COMMITTED transaction, and what does not."""
    with auditor.connect() as connection:
        held_id, other_id = connection.scalars(
            select(Transaction.id).order_by(Transaction.occurred_at.desc(), Transaction.id.desc()).offset(1).limit(2)
        ).all()
    seen: dict[str, Any] = {"held_id": held_id, "other_id": other_id}
    with Session(s.engine(isolation_level="READ COMMITTED")) as session:
        held = session.get_one(Transaction, held_id)  # kept in a variable: the identity map keeps it
        seen["held_before"] = held.version
        s.step("orm-rc", f"READ COMMITTED session: load row {held_id} and keep the object", "version 1",
               f"version {held.version}")
        with auditor.begin() as connection:
            connection.execute(
                update(Transaction).where(Transaction.id.in_([held_id, other_id]))
                .values(version=Transaction.version + 1, label=WRITER_LABEL)
            )
        s.step("writer", f"UPDATE rows {held_id} and {other_id} (version + 1), COMMIT", "committed", "committed")
        checks = [
            ("held_requeried", f"same transaction: query row {held_id} again (the object it holds)",
             "version 1: a held object's loaded attributes are not overwritten (stale in the ORM)",
             lambda: session.scalars(select(Transaction).where(Transaction.id == held_id)).one().version),
            ("held_column", f"same transaction: SELECT version of row {held_id} (a column, no object)",
             "version 2: READ COMMITTED reads the latest committed row",
             lambda: session.scalar(select(Transaction.version).where(Transaction.id == held_id))),
            ("other_new_query", f"same transaction: query row {other_id} (not held)",
             "version 2: a new object is built from the fresh row",
             lambda: session.get_one(Transaction, other_id).version),
            ("held_populate_existing", f"same transaction: query row {held_id} with populate_existing",
             "version 2: the held object is overwritten from the fresh row",
             lambda: session.scalars(select(Transaction).where(Transaction.id == held_id)
                                     .execution_options(populate_existing=True)).one().version),
        ]
        for key, action, expected, read in checks:
            seen[key] = read()
            s.step("orm-rc", action, expected, f"version {seen[key]}")
    return seen


def judge(observations: dict[str, Any]) -> Judgement:
    before, ack, database, after = (observations[k] for k in ("before", "ack", "database", "after"))
    if before["status"] != 200 or after["status"] != 200:
        return Judgement(INCONCLUSIVE, f"a read failed (HTTP {before['status']}, then {after['status']})")
    if ack["status"] != 200 or database["version"] < ack["version"]:
        return Judgement(INCONCLUSIVE, f"the edit was not acknowledged and committed (HTTP {ack['status']}, "
                                       f"database at version {database['version']})")
    if before["served_by"] != after["served_by"]:
        return Judgement(INCONCLUSIVE, f"the two reads came from different threads ({before['served_by']}, "
                                       f"{after['served_by']}); steering failed")
    if after["version"] < ack["version"]:
        no_begin = not any(e.startswith("alice:BEGIN") for e in after.get("transaction_events", []))
        how = "; its transaction, begun at her first read, was still open (no new BEGIN)" if no_begin else ""
        return Judgement(STALE, f"alice saw version {after['version']} on thread {after['served_by']} after version "
                                f"{ack['version']} was acknowledged and committed{how}", "database")
    return Judgement(FRESH, f"alice saw version {after['version']} on the same thread after version "
                            f"{ack['version']} was acknowledged")
