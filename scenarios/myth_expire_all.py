"""myth_expire_all: "session.expire_all() makes the next attribute access show the latest data".

Claim steps: the reader loads the row (its transaction is now open and, where the database
takes one, holds a snapshot); the writer changes the row and commits on its own connection;
the reader calls `expire_all()` and reads the attribute again. expire_all() only marks the
loaded attributes as stale, so the access runs a new SELECT - but in the SAME transaction.
Whether that SELECT sees the commit is the database's business, not the ORM's:
- SQLite (deferred BEGIN, WAL: the snapshot is kept until the transaction ends): old data;
- MariaDB at its default REPEATABLE READ (the snapshot of the first read): old data;
- PostgreSQL at its default READ COMMITTED (a snapshot per statement): new data - the claim
  holds there, and only because of the isolation level. Also recorded (not judged): the
  same steps at PostgreSQL REPEATABLE READ (old data) and MariaDB READ COMMITTED (new data).
Staleness when it does not hold: in the database (the transaction's snapshot), not in the ORM.

Cure steps: the same setup for each alternative, then one of: `refresh(obj)`,
a re-query with `populate_existing`, `commit()`, `rollback()`, `close()` (then reading again).
refresh() and populate_existing re-run a SELECT in the same transaction, so they are exactly
as fresh as expire_all() (not at all under a snapshot); ending the transaction is what lets
the next read see the commit. The cure holds where commit, rollback and close all gave a
fresh read; the other alternatives are recorded as observations.
"""

from __future__ import annotations

from typing import Any, Callable

from sqlalchemy import Engine, select
from sqlalchemy.orm import Session

from lab.harness.myths import DEFAULT_LEVEL, commit_label, in_transaction, isolation_of, newest_id, traced_engine
from lab.harness.scenario import Cause, Scenario
from lab.harness.verdicts import DOES_NOT_HOLD, HOLDS, IN_DATABASE, INCONCLUSIVE, NOWHERE, Judgement
from lab.models import Transaction

CAUSE = Cause("myth_expire_all", "expire_all() is believed to show the latest committed data", kind="myth")

# The level that is not the backend's default, recorded as an observation (SQLite has one).
OTHER_LEVEL = {"postgresql": "REPEATABLE READ", "mariadb": "READ COMMITTED"}
ENDING = ("commit", "rollback", "close")  # the alternatives that end the reader's transaction


def run(s: Scenario) -> dict[str, Any]:
    writer = traced_engine(s, "writer")
    tx_id = newest_id(s.engine())
    levels = [None] + ([OTHER_LEVEL[s.backend]] if s.backend in OTHER_LEVEL else [])
    if s.app == "claim":
        rounds = [claim_round(s, traced_engine(s, "reader", level), writer, tx_id) for level in levels]
    else:
        rounds = []
        for level in levels:
            reader = traced_engine(s, "reader", level)
            # At the other level, the two that stay in the transaction and one that ends it.
            names = list(ALTERNATIVES) if level is None else ["refresh", "populate_existing", "commit"]
            rounds += [cure_round(s, reader, writer, tx_id, name) for name in names]
    return {"app": s.app, "backend": s.backend, "default_level": DEFAULT_LEVEL[s.backend], "row": tx_id,
            "rounds": rounds}


def claim_round(s: Scenario, reader: Engine, writer: Engine, tx_id: int) -> dict[str, Any]:
    with Session(reader) as session:
        held = session.get(Transaction, tx_id)
        assert held is not None
        before, level = held.version, isolation_of(session)
        s.step("reader", f"session.get(Transaction, {tx_id})  [{level}]", "the row as it is now",
               f"version {before}; {in_transaction(session)}")
        open_when_written = session.in_transaction()
        written = commit_label(s, writer, tx_id, "claim: expire_all", "committed while the reader's transaction is open")
        session.expire_all()
        seen = held.version  # expired: this access runs a new SELECT, in the same transaction
        s.step("reader", "session.expire_all(); then read held.version", f"version {written} (the claim)",
               f"version {seen}; {in_transaction(session)} (the reload ran inside it)")
        close(s, session)
    return {"kind": "expire_all", "level": level, "default": level == DEFAULT_LEVEL[s.backend],
            "before": before, "written": written, "seen": seen, "open_when_written": open_when_written}


def close(s: Scenario, session: Session) -> None:
    session.close()
    s.step("reader", "session.close()", "its transaction ends (ROLLBACK)", in_transaction(session))


def _refresh(session: Session, held: Transaction, tx_id: int) -> int:
    session.refresh(held)
    return held.version


def _populate_existing(session: Session, held: Transaction, tx_id: int) -> int:
    session.execute(select(Transaction).where(Transaction.id == tx_id)
                    .execution_options(populate_existing=True)).scalar_one()
    return held.version  # the same object: populate_existing overwrote its loaded attributes


def _commit(session: Session, held: Transaction, tx_id: int) -> int:
    session.commit()  # expire_on_commit: the next access loads in a new transaction
    return held.version


def _rollback(session: Session, held: Transaction, tx_id: int) -> int:
    session.rollback()  # expires every object; the next access loads in a new transaction
    return held.version


def _close(session: Session, held: Transaction, tx_id: int) -> int:
    session.close()  # `held` is now detached with its old values: read the row again
    again = session.get(Transaction, tx_id)
    assert again is not None
    return again.version


ALTERNATIVES: dict[str, tuple[str, Callable[[Session, Transaction, int], int]]] = {
    "refresh": ("session.refresh(held); read held.version", _refresh),
    "populate_existing": ("select(Transaction)...execution_options(populate_existing=True); read held.version",
                          _populate_existing),
    "commit": ("session.commit(); read held.version", _commit),
    "rollback": ("session.rollback(); read held.version", _rollback),
    "close": ("session.close(); session.get(Transaction, id).version", _close),
}


def cure_round(s: Scenario, reader: Engine, writer: Engine, tx_id: int, name: str) -> dict[str, Any]:
    action, apply = ALTERNATIVES[name]
    with Session(reader) as session:
        held = session.get(Transaction, tx_id)
        assert held is not None
        before, level = held.version, isolation_of(session)
        s.step("reader", f"session.get(Transaction, {tx_id})  [{level}]", "the row as it is now",
               f"version {before}; {in_transaction(session)}")
        open_when_written = session.in_transaction()
        written = commit_label(s, writer, tx_id, f"cure: {name}", "committed while the reader's transaction is open")
        seen = apply(session, held, tx_id)
        fresh = seen == written
        s.step("reader", action, f"version {written}" if name in ENDING else "fresh only if the transaction's "
               "next statement can see the commit", f"version {seen} ({'fresh' if fresh else 'stale'})")
        close(s, session)
    return {"kind": name, "level": level, "default": level == DEFAULT_LEVEL[s.backend], "before": before,
            "written": written, "seen": seen, "open_when_written": open_when_written}


def judge(observations: dict[str, Any]) -> Judgement:
    rounds = observations["rounds"]
    unsteered = [r for r in rounds if not r["open_when_written"] or r["written"] != r["before"] + 1]
    if unsteered:
        r = unsteered[0]
        return Judgement(INCONCLUSIVE, f"{r['kind']} round: the write was not made while the reader's transaction "
                                       f"was open (versions {r['before']} -> {r['written']}); steering failed")
    default = [r for r in rounds if r["default"]]
    if not default:
        return Judgement(INCONCLUSIVE, f"no round ran at the default level {observations['default_level']}")
    if observations["app"] == "claim":
        r = default[0]
        if r["seen"] == r["written"]:
            return Judgement(HOLDS, f"at {r['level']} the reload after expire_all() saw version {r['written']}, "
                                    f"committed while the reader's transaction was open (a new statement sees "
                                    f"new commits)", NOWHERE)
        return Judgement(DOES_NOT_HOLD, f"at {r['level']} the reader still saw version {r['seen']} after "
                                        f"expire_all(), although version {r['written']} was committed: the reload "
                                        f"ran in the same transaction, whose snapshot predates the commit", IN_DATABASE)
    seen = {r["kind"]: r for r in default}
    stale = [name for name in ENDING if seen[name]["seen"] != seen[name]["written"]]
    others = ", ".join(f"{name}() {'fresh' if seen[name]['seen'] == seen[name]['written'] else 'stale'}"
                       for name in ("refresh", "populate_existing"))
    if stale:
        r = seen[stale[0]]
        return Judgement(DOES_NOT_HOLD, f"after {stale[0]}() the reader saw version {r['seen']}, not the committed "
                                        f"version {r['written']}", IN_DATABASE)
    return Judgement(HOLDS, f"at {default[0]['level']} commit/rollback/close then reading saw the committed version "
                            f"every time; within the open transaction: {others}", NOWHERE)
