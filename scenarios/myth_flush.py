"""myth_flush: "calling flush() resets the previously cached data / refreshes the session".

Claim steps: the reader loads the row (its transaction is open); the writer changes the row
and commits on its own connection; the reader calls `session.flush()` and reads the held
object, re-queries it as an entity (same identity: the identity map keeps the loaded values)
and asks the database for the bare column (what its transaction can see). Then it makes a
change of its own to ANOTHER row and flushes again, so that the flush really sends SQL.
flush() only sends the session's pending changes inside the same transaction; it expires
nothing and reloads nothing, so the held object stays at the old version on every backend.
Where the staleness sits differs, and the column query shows where:
- PostgreSQL READ COMMITTED: the column query sees the new version, the object does not:
  the staleness is in the ORM (identity map);
- SQLite and MariaDB REPEATABLE READ: the column query also sees the old version: the
  transaction's snapshot is old too (in the database). On SQLite the second flush even fails:
  a transaction whose read snapshot is older than the last commit cannot write ("database is
  locked" at once) - recorded as an observation, then rolled back.

Cure steps: the same setup, then `commit()` (or `rollback()`) and read again: the expired
object is reloaded in a new transaction and shows the committed version everywhere.
"""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import Engine, select
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from lab.harness.myths import commit_label, in_transaction, isolation_of, newest_id, statements, traced_engine
from lab.harness.scenario import Cause, Scenario
from lab.harness.verdicts import DOES_NOT_HOLD, HOLDS, IN_DATABASE, IN_ORM, INCONCLUSIVE, NOWHERE, Judgement
from lab.models import Transaction

CAUSE = Cause("myth_flush", "flush() is believed to reset cached data and show the latest rows", kind="myth")


def run(s: Scenario) -> dict[str, Any]:
    writer, reader = traced_engine(s, "writer"), traced_engine(s, "reader")
    with s.engine().connect() as connection:  # the row under test and another row for the reader's own edit
        tx_id = newest_id(s.engine())
        other_id = int(connection.execute(select(Transaction.id).where(Transaction.id != tx_id)
                                          .order_by(Transaction.id).limit(1)).scalar_one())
    if s.app == "claim":
        rounds = [claim_round(s, reader, writer, tx_id, other_id)]
    else:
        rounds = [cure_round(s, reader, writer, tx_id, name) for name in ENDINGS]
    return {"app": s.app, "backend": s.backend, "row": tx_id, "rounds": rounds}


def setup(s: Scenario, session: Session, writer: Engine, tx_id: int, label: str) -> tuple[Transaction, int, int, str]:
    held = session.get(Transaction, tx_id)
    assert held is not None
    level = isolation_of(session)
    s.step("reader", f"held = session.get(Transaction, {tx_id})  [{level}]", "the row as it is now",
           f"version {held.version}; {in_transaction(session)}")
    before = held.version
    if not session.in_transaction():
        raise RuntimeError("the reader's transaction is not open; the write would not test anything")
    written = commit_label(s, writer, tx_id, label, "committed while the reader's transaction is open")
    return held, before, written, level


def claim_round(s: Scenario, reader: Engine, writer: Engine, tx_id: int, other_id: int) -> dict[str, Any]:
    with Session(reader) as session:
        held, before, written, level = setup(s, session, writer, tx_id, "claim: flush")
        sent = statements(reader)
        session.flush()
        flushed = held.version
        sql = statements(reader) - sent
        s.step("reader", "session.flush() (nothing pending); read held.version", f"version {written} (the claim)",
               f"version {flushed}; {sql} SQL statements sent; {in_transaction(session)}")
        entity = session.execute(select(Transaction).where(Transaction.id == tx_id)).scalar_one()
        requeried, same_object = entity.version, entity is held
        s.step("reader", "session.execute(select(Transaction).where(id)).scalar_one().version",
               "the identity map returns the held object with its loaded values",
               f"version {requeried} (same object: {same_object})")
        column = int(session.execute(select(Transaction.version).where(Transaction.id == tx_id)).scalar_one())
        s.step("reader", "session.execute(select(Transaction.version).where(id)) (a bare column)",
               "what this transaction can see in the database", f"version {column}")

        other = session.get(Transaction, other_id)
        assert other is not None
        other.label = "edited by the reader"
        sent = statements(reader)
        try:
            session.flush()
            pending_error = ""
            pending = held.version
            observed = f"the UPDATE of row {other_id} was sent; held.version is {pending}"
        except OperationalError as error:
            pending_error, pending = str(error.orig), None
            observed = f"the flush failed: {type(error.orig).__name__}: {error.orig}"
        pending_sql = statements(reader) - sent
        s.step("reader", f"change row {other_id}'s label; session.flush(); read held.version",
               "the UPDATE goes out in this transaction; held stays as loaded", f"{observed} ({pending_sql} SQL statements)")
        session.rollback()  # leave nothing of the reader's edit behind
        s.step("reader", "session.rollback()", "the reader's transaction ends, its edit is undone", in_transaction(session))
    return {"level": level, "before": before, "written": written, "after_flush": flushed, "sql_for_flush": sql,
            "requeried": requeried, "same_object": same_object, "column": column,
            "after_pending_flush": pending, "pending_flush_error": pending_error, "sql_for_pending_flush": pending_sql}


ENDINGS: dict[str, Callable[[Session], None]] = {"commit": Session.commit, "rollback": Session.rollback}


def cure_round(s: Scenario, reader: Engine, writer: Engine, tx_id: int, name: str) -> dict[str, Any]:
    with Session(reader) as session:
        held, before, written, level = setup(s, session, writer, tx_id, f"cure: flush then {name}")
        session.flush()
        ENDINGS[name](session)  # expires every object: the next access loads in a new transaction
        seen = held.version
        s.step("reader", f"session.flush(); session.{name}(); read held.version", f"version {written}",
               f"version {seen} ({'fresh' if seen == written else 'stale'}); {in_transaction(session)} (a new one)")
        session.close()
        s.step("reader", "session.close()", "its transaction ends (ROLLBACK)", in_transaction(session))
    return {"kind": name, "level": level, "before": before, "written": written, "seen": seen}


def judge(observations: dict[str, Any]) -> Judgement:
    rounds = observations["rounds"]
    for r in rounds:
        if r["written"] != r["before"] + 1:
            return Judgement(INCONCLUSIVE, f"the write went from version {r['before']} to {r['written']}; steering failed")
    if observations["app"] == "cure":
        stale = [r for r in rounds if r["seen"] != r["written"]]
        if stale:
            r = stale[0]
            return Judgement(DOES_NOT_HOLD, f"after {r['kind']}() the reader saw version {r['seen']}, not the "
                                            f"committed version {r['written']}", IN_DATABASE)
        return Judgement(HOLDS, f"after {' and after '.join(r['kind'] + '()' for r in rounds)} the reader saw the "
                                f"committed version (read in a new transaction)")
    r = rounds[0]
    if r["after_flush"] == r["written"]:
        return Judgement(HOLDS, f"after flush() the held object showed version {r['written']}", NOWHERE)
    where = IN_ORM if r["column"] == r["written"] else IN_DATABASE
    why = (f"the database answered version {r['column']} to a bare column query: the identity map kept the old values"
           if where == IN_ORM else "its transaction's snapshot still showed the old row too")
    if r["pending_flush_error"]:
        then = f"; a flush with a pending edit failed ({r['pending_flush_error']})"
    else:
        then = f"; after a flush that sent an UPDATE it still showed version {r['after_pending_flush']}"
    return Judgement(DOES_NOT_HOLD, f"after flush() ({r['sql_for_flush']} SQL sent) the held object still showed "
                                    f"version {r['after_flush']} although version {r['written']} was committed; "
                                    f"{why}{then}", where)
