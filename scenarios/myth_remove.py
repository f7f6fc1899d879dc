"""myth_remove: "after db.session.remove(), the objects I still hold show fresh data".

Runs the fixed app's Flask-SQLAlchemy setup in-process (fixed.app.create_app on the
scenario's database, app contexts pushed by hand, so `db.session` is the app's own session).

Claim steps: request 1 loads the row and something keeps the object (a cache, a module
global, a background job); the writer commits a change; request 1 calls `db.session.remove()`
and the held object is read again. remove() closes the session: its transaction ends
(ROLLBACK) and every object it held is detached - still carrying the values loaded before.
Reading a loaded attribute of a detached object sends no SQL, so it shows the old version;
an object whose attributes were expired before remove() (here: by a commit, as after any
write) cannot load them any more and raises DetachedInstanceError. The same on every
backend: the staleness is in the ORM (the held object), not in the database.

Cure steps: after remove(), re-query the row through `db.session` (a new session with an
empty identity map and a new transaction): it shows the committed version. Also recorded:
`merge(held)` loads the row and then copies the held object's OLD values onto it (a flush
would write them back: no refresh at all); `db.session.add(held)` re-attaches the object
but keeps its old values (no SQL), then `refresh(held)` loads the committed ones.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import inspect
from sqlalchemy.orm.exc import DetachedInstanceError

from lab.harness.myths import commit_label, newest_id, statements, trace, traced_engine
from lab.harness.scenario import Cause, Scenario
from lab.harness.verdicts import DOES_NOT_HOLD, HOLDS, IN_ORM, INCONCLUSIVE, NOWHERE, Judgement
from lab.models import Transaction

CAUSE = Cause("myth_remove", "db.session.remove() is believed to refresh the objects still held", kind="myth")


def run(s: Scenario) -> dict[str, Any]:
    from fixed.app import create_app, db  # the app's own Flask-SQLAlchemy setup

    app = create_app({"SQLALCHEMY_DATABASE_URI": s.db_url})
    with app.app_context():
        engine = trace(s, db.engine, "reader")
    writer = traced_engine(s, "writer")
    tx_id = newest_id(s.engine())
    try:
        with app.app_context():
            observations = {"app": s.app, "backend": s.backend, "row": tx_id, **held_after_remove(s, db, engine, writer, tx_id)}
        with app.app_context():
            if s.app == "claim":
                observations["expired"] = expired_after_remove(s, db, tx_id)
            else:
                observations["cure"] = cure(s, db, engine, tx_id, observations.pop("_held"), observations["written"])
        observations.pop("_held", None)
        return observations
    finally:
        engine.dispose()


def held_after_remove(s: Scenario, db: Any, engine: Any, writer: Any, tx_id: int) -> dict[str, Any]:
    held = db.session.get(Transaction, tx_id)
    before = held.version
    s.step("reader", f"request 1: held = db.session.get(Transaction, {tx_id}); kept in a variable",
           "the row as it is now", f"version {before}")
    written = commit_label(s, writer, tx_id, f"myth_remove {s.app}", "committed on the writer's own connection")
    db.session.remove()
    detached = inspect(held).detached
    s.step("reader", "db.session.remove()", "the session closes: ROLLBACK; held objects are detached",
           f"held object detached: {detached}")
    sent = statements(engine)
    seen = held.version
    sql = statements(engine) - sent
    s.step("reader", "read held.version", f"version {written} (the claim)",
           f"version {seen} ({'fresh' if seen == written else 'stale'}); {sql} SQL statements sent")
    return {"before": before, "written": written, "detached": detached, "seen": seen, "sql_for_read": sql,
            "_held": held}


def expired_after_remove(s: Scenario, db: Any, tx_id: int) -> dict[str, Any]:
    held = db.session.get(Transaction, tx_id)
    db.session.commit()  # as after any write: expire_on_commit expires every loaded attribute
    s.step("reader", f"request 2: held = db.session.get(Transaction, {tx_id}); db.session.commit()",
           "committed; held's attributes are expired (reloaded on next access)",
           f"{len(inspect(held).expired_attributes)} attributes expired")
    db.session.remove()
    try:
        seen: Any = held.version
        outcome = f"version {seen}"
        error = ""
    except DetachedInstanceError as exc:
        seen, error = None, type(exc).__name__
        outcome = f"{error}: {str(exc).split(' (Background')[0]}"
    s.step("reader", "db.session.remove(); read held.version", "fresh data (the claim)", outcome)
    return {"seen": seen, "error": error}


def cure(s: Scenario, db: Any, engine: Any, tx_id: int, held: Transaction, written: int) -> dict[str, Any]:
    again = db.session.get(Transaction, tx_id)
    requery = again.version
    s.step("reader", f"db.session.get(Transaction, {tx_id}) after remove(): a new session",
           f"version {written}", f"version {requery} ({'fresh' if requery == written else 'stale'})")
    db.session.remove()

    merged = db.session.merge(held)  # loads the row, then copies held's (old) loaded values onto it
    merged_version, dirty = merged.version, merged in db.session.dirty
    s.step("reader", "merged = db.session.merge(held); read merged.version",
           "the held object's old values copied onto the freshly loaded row",
           f"version {merged_version}; old values pending to be written back: {dirty}")
    db.session.remove()  # discard that pending change: nothing is flushed

    sent = statements(engine)
    db.session.add(held)
    added = held.version
    sql = statements(engine) - sent
    s.step("reader", "db.session.add(held); read held.version", "re-attached, old values kept",
           f"version {added} ({'fresh' if added == written else 'stale'}); {sql} SQL statements sent")
    db.session.refresh(held)
    refreshed = held.version
    s.step("reader", "db.session.refresh(held); read held.version", f"version {written}",
           f"version {refreshed} ({'fresh' if refreshed == written else 'stale'})")
    db.session.remove()

    return {"requery": requery, "add_then_read": added, "sql_for_add": sql, "refresh_after_add": refreshed,
            "merge": merged_version, "merge_dirty": dirty}


def judge(observations: dict[str, Any]) -> Judgement:
    before, written = observations["before"], observations["written"]
    if written != before + 1:
        return Judgement(INCONCLUSIVE, f"the write went from version {before} to {written}; steering failed")
    if not observations["detached"]:
        return Judgement(INCONCLUSIVE, "the held object was not detached by remove(); the setup did not do what it says")
    if observations["app"] == "cure":
        cure = observations["cure"]
        if cure["requery"] == written:
            return Judgement(HOLDS, f"re-querying after remove() gave version {written} (a new session); the held "
                                    f"object itself still said version {observations['seen']}")
        return Judgement(DOES_NOT_HOLD, f"re-querying after remove() gave version {cure['requery']}, not the committed "
                                        f"version {written}", IN_ORM)
    if observations["seen"] == written:
        return Judgement(HOLDS, f"the held object showed version {written} after remove()", NOWHERE)
    expired = observations["expired"]
    also = (f"; an object expired before remove() raised {expired['error']}" if expired["error"]
            else f"; an object expired before remove() showed version {expired['seen']}")
    return Judgement(DOES_NOT_HOLD, f"after remove() the held object still showed version {observations['seen']} "
                                    f"({observations['sql_for_read']} SQL sent) although version {written} was "
                                    f"committed{also}", IN_ORM)
