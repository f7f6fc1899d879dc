"""Database URLs and engine settings per backend, shared by every variant of the app.

Each setting here is a guard a production app should have; the comment says why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import URL, make_url

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SQLITE_PATH = REPO_ROOT / "var" / "lab.sqlite3"

# Server-side limits. A statement or lock wait that runs longer than this is a bug in a web
# request, so it fails instead of holding a worker (and, for locks, other writers) hostage.
STATEMENT_TIMEOUT_MS = 5_000
LOCK_TIMEOUT_MS = 3_000
# PostgreSQL ends a session that sits idle inside a transaction: an open transaction pins
# old row versions (vacuum cannot remove them) and, under REPEATABLE READ, a stale snapshot.
# (LAB_IDLE_IN_TRANSACTION_TIMEOUT_MS overrides it: scenarios that wait for it shorten it.)
IDLE_IN_TRANSACTION_TIMEOUT_MS = 30_000


def idle_in_transaction_timeout_ms() -> int:
    return int(os.environ.get("LAB_IDLE_IN_TRANSACTION_TIMEOUT_MS", IDLE_IN_TRANSACTION_TIMEOUT_MS))


def database_url() -> str:
    """The app's database: `LAB_DATABASE_URL`, or an absolute path to the SQLite file."""
    url = os.environ.get("LAB_DATABASE_URL")
    if url:
        return url
    DEFAULT_SQLITE_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_SQLITE_PATH}"


def backend_of(url: str | URL) -> str:
    """'sqlite', 'postgresql' or 'mariadb' (MySQL URLs count as mariadb: it is what we run)."""
    name = make_url(url).get_backend_name()
    if name in ("mysql", "mariadb"):
        return "mariadb"
    if name in ("sqlite", "postgresql"):
        return name
    raise ValueError(
        f"unsupported database URL {url!r}: use sqlite:///<absolute path>, "
        "postgresql+psycopg://... or mysql+pymysql://..."
    )


def engine_options(url: str | URL) -> dict[str, Any]:
    """Keyword arguments for create_engine (and SQLALCHEMY_ENGINE_OPTIONS) for this URL."""
    backend = backend_of(url)
    if backend == "sqlite":
        # busy timeout: a writer waits this long for another writer instead of failing at once.
        return {"connect_args": {"timeout": LOCK_TIMEOUT_MS / 1000}}
    options: dict[str, Any] = {
        # A connection the server closed (restart, idle timeout) is replaced before use
        # instead of failing the request that drew it from the pool.
        "pool_pre_ping": True,
        # Connections are recycled well before server-side idle limits cut them.
        "pool_recycle": 1800,
    }
    if backend == "postgresql":
        options["connect_args"] = {
            "options": (
                f"-c statement_timeout={STATEMENT_TIMEOUT_MS}"
                f" -c lock_timeout={LOCK_TIMEOUT_MS}"
                f" -c idle_in_transaction_session_timeout={idle_in_transaction_timeout_ms()}"
            )
        }
    else:
        options["connect_args"] = {
            "charset": "utf8mb4",
            # MariaDB names: max_statement_time is in seconds, lock wait in whole seconds.
            "init_command": (
                f"SET SESSION max_statement_time={STATEMENT_TIMEOUT_MS / 1000},"
                f" SESSION innodb_lock_wait_timeout={max(1, LOCK_TIMEOUT_MS // 1000)}"
            ),
        }
    return options


# A write that reads its row first and then locks it (queries.append_note) begins its
# transaction with these options (Session.connection(execution_options=...), before BEGIN).
# On the servers, READ COMMITTED (MariaDB's default is REPEATABLE READ): each statement sees the
# latest commit, and the row lock orders the writers; under REPEATABLE READ PostgreSQL would
# refuse the lock of a row changed since the snapshot (40001) and InnoDB would answer the
# transaction's plain reads from its first snapshot while its locking reads see the latest row.
# SQLite has no row locks: BEGIN IMMEDIATE takes the database's write lock at the start
# (waiting for another writer up to the busy timeout), so the transaction's first read already
# sees every commit before it; a deferred one that read before another writer committed could
# not write at all ("database is locked" at once, in WAL).
BEGIN_IMMEDIATE = "lab_sqlite_begin_immediate"


def locking_write_options(dialect_name: str) -> dict[str, Any]:
    if dialect_name == "sqlite":
        return {BEGIN_IMMEDIATE: True}
    return {"isolation_level": "READ COMMITTED"}


def configure_engine(engine: Engine) -> Engine:
    """Give SQLite real transactions; other backends need nothing here.

    Python 3.11's sqlite3 driver never sends BEGIN before a SELECT, so without this recipe
    (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL") two reads in
    one SQLAlchemy transaction are two separate snapshots, and SQLite could not show what a
    real database shows. With it, SQLite behaves like the other two: the snapshot is taken at
    the first read of a transaction and kept until COMMIT or ROLLBACK.
    """
    if engine.dialect.name != "sqlite":
        return engine

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None  # the driver stops managing transactions
        cursor = dbapi_connection.cursor()
        # WAL: readers do not block the writer and keep their snapshot. It must be set
        # outside a transaction, and it persists in the file.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()
        # SQLite's built-in lower() folds ASCII only; label_contains must be case-insensitive
        # for "Café" as it is on the other backends.
        dbapi_connection.create_function("lower", 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # Deferred BEGIN: the edit's first statement is its conditional UPDATE, so a writer
        # waits for the write lock (busy timeout) instead of failing on an old read snapshot.
        # A read-then-lock write asks for BEGIN IMMEDIATE (locking_write_options).
        immediate = connection.get_execution_options().get(BEGIN_IMMEDIATE)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def server_version(engine: Engine) -> str:
    """'PostgreSQL 15.20', 'MariaDB 10.11.19' or 'SQLite 3.40.1', for results and reports."""
    backend = backend_of(engine.url)
    with engine.connect() as connection:
        if backend == "sqlite":
            return "SQLite " + connection.exec_driver_sql("select sqlite_version()").scalar_one()
        if backend == "postgresql":
            version = connection.exec_driver_sql("show server_version").scalar_one()
            return "PostgreSQL " + version.split()[0]
        version = connection.exec_driver_sql("select version()").scalar_one()
        return "MariaDB " + version.split("-")[0]
