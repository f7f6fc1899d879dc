"""What the myth scenarios share: traced actors on plain engines, the writer's commit, levels.

Myths run in-process with plain SQLAlchemy sessions (no app, no gunicorn), so the app's
transaction log (lab/labmode.py) does not see them. `traced_engine` gives each actor an engine
of its own whose BEGIN / COMMIT / ROLLBACK go to the scenario's transaction log under the
actor's name, so the timeline shows, step by step, which transaction each actor was in.
"""

from __future__ import annotations

import json
import os
import threading
import time
import weakref
from typing import Any, Callable

from sqlalchemy import Connection, Engine, event, select, update
from sqlalchemy.orm import Session

from lab.harness.scenario import Scenario
from lab.labmode import server_connection_id
from lab.models import Transaction

# What "the database's default isolation" is on each backend; SQLite has one behaviour: a
# deferred BEGIN (lab.engine's recipe) whose snapshot, in WAL mode, is taken at the first read.
DEFAULT_LEVEL = {"sqlite": "SERIALIZABLE", "postgresql": "READ COMMITTED", "mariadb": "REPEATABLE READ"}


def traced_engine(s: Scenario, actor: str, isolation_level: str | None = None) -> Engine:
    """A new engine for one actor (disposed with the scenario) whose transactions are logged."""
    return trace(s, s.engine(**({"isolation_level": isolation_level} if isolation_level else {})), actor)


def trace(s: Scenario, engine: Engine, actor: str) -> Engine:
    """Log `engine`'s BEGIN / COMMIT / ROLLBACK as `actor`'s; count its statements (`statements`)."""
    dialect = engine.dialect.name

    @event.listens_for(engine, "connect")
    def _remember_server_id(dbapi_connection: Any, record: Any) -> None:
        record.info["server_conn_id"] = server_connection_id(dbapi_connection, dialect)

    def logger(name: str) -> Callable[[Connection], None]:
        def _log(connection: Connection) -> None:
            entry = {"t": time.time(), "pid": os.getpid(), "thread": threading.get_native_id(), "actor": actor,
                     "event": name, "conn": connection.connection.info.get("server_conn_id", "?")}
            with s.txlog_path.open("a", encoding="utf-8") as log:
                log.write(json.dumps(entry) + "\n")
        return _log

    for name in ("begin", "commit", "rollback"):
        event.listen(engine, name, logger(name.upper()))

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*_args: Any) -> None:
        STATEMENTS[engine] = STATEMENTS.get(engine, 0) + 1

    return engine


# Statements each traced engine has sent: tells "served from memory" from "asked the database".
STATEMENTS: "weakref.WeakKeyDictionary[Engine, int]" = weakref.WeakKeyDictionary()


def statements(engine: Engine) -> int:
    return STATEMENTS.get(engine, 0)


def isolation_of(session: Session) -> str:
    """The isolation level the session's current transaction really runs at (asked, not assumed)."""
    connection = session.connection()
    if connection.dialect.name == "sqlite":
        return DEFAULT_LEVEL["sqlite"]
    if connection.dialect.name == "postgresql":
        return str(connection.exec_driver_sql("SHOW transaction_isolation").scalar_one()).upper()
    # MariaDB 10.11 names it @@tx_isolation (@@transaction_isolation is error 1193 there).
    return str(connection.exec_driver_sql("SELECT @@tx_isolation").scalar_one()).replace("-", " ").upper()


def newest_id(engine: Engine) -> int:
    """The row under test: the newest transaction of the seeded data (as the page shows first)."""
    with engine.connect() as connection:
        return int(connection.execute(
            select(Transaction.id).order_by(Transaction.occurred_at.desc(), Transaction.id.desc()).limit(1)
        ).scalar_one())


def commit_label(s: Scenario, writer: Engine, tx_id: int, label: str, expected: str = "") -> int:
    """The writer changes the row's label and bumps its version in a short transaction; returns it."""
    with writer.begin() as connection:
        connection.execute(update(Transaction).where(Transaction.id == tx_id)
                           .values(label=label, version=Transaction.version + 1))
        version = int(connection.execute(select(Transaction.version).where(Transaction.id == tx_id)).scalar_one())
    s.step("writer", f"UPDATE row {tx_id}: label {label!r}, version + 1; COMMIT",
           expected or "committed", f"committed version {version}")
    return version


def in_transaction(session: Session) -> str:
    return "its transaction is still open" if session.in_transaction() else "no transaction is open"
