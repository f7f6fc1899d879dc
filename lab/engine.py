"""Database URLs and engine settings per backend, shared by every variant of the app.

Each setting here is a guard a production app should have; the comment says why.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, exc
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


class DatabaseFileMissing(RuntimeError):
    """The SQLite file the pool's connections were opened on is no longer at its path."""


def configure_engine(engine: Engine, *, watch_file: bool = True) -> Engine:
    """Give SQLite real transactions, and connections that follow their file; other backends
    need nothing here.

    Python 3.11's sqlite3 driver never sends BEGIN before a SELECT, so without this recipe
    (SQLAlchemy docs, "Serializable isolation / Savepoints / Transactional DDL") two reads in
    one SQLAlchemy transaction are two separate snapshots, and SQLite could not show what a
    real database shows. With it, SQLite behaves like the other two: the snapshot is taken at
    the first read of a transaction and kept until COMMIT or ROLLBACK.

    `watch_file` (see `_watch_file`): a pooled connection whose file was replaced on disk is
    never handed out; the pool reconnects to the file now at the path.
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

    if watch_file:  # after _on_connect, so the file exists (WAL pragma) when it is identified
        _watch_file(engine)
    return engine


FILE_IDENTITY_KEY = "lab_sqlite_file"  # connection_record.info: (st_dev, st_ino) at connect


def sqlite_file_of(engine: Engine) -> str | None:
    """The absolute path of the engine's SQLite file; None for in-memory databases."""
    database = engine.url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return os.path.abspath(database)


def file_identity(path: str) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the file at `path` now, or None when nothing is there."""
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def _watch_file(engine: Engine) -> None:
    """An open SQLite connection holds a file descriptor, not a path: when a sync tool or a
    restore renames another file over the database, every pooled connection keeps reading the
    old file (its inode) for as long as it lives, and the app serves the old rows.

    So each connection records the identity (st_dev, st_ino) of the file it opened, and each
    checkout compares it with the file at the path now: one os.stat per checkout, a few
    microseconds. On a mismatch, InvalidatePoolError (a DisconnectionError raised in the
    checkout event, SQLAlchemy's "custom pessimistic ping") makes the pool close this
    connection and retry with a new one, and marks every other connection made before now to
    be replaced at its next checkout: old connections are closed without being used again
    (which matters under WAL: see scenarios/sqlite_file_replaced.py).

    A file that is gone (deleted, not replaced) raises DatabaseFileMissing instead: reconnecting
    would let SQLite create a new, empty database at the path and serve that silently.
    """
    path = sqlite_file_of(engine)
    if path is None:
        return

    @event.listens_for(engine, "connect")
    def _remember_file(_dbapi_connection: Any, record: Any) -> None:
        # Stat right after the driver opened (or created) the file: sqlite3.connect does at once.
        record.info[FILE_IDENTITY_KEY] = file_identity(path)

    @event.listens_for(engine, "checkout")
    def _same_file(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        opened = record.info.get(FILE_IDENTITY_KEY)
        now = file_identity(path)
        if opened is None or now == opened:
            return
        if now is None:
            raise DatabaseFileMissing(
                f"the SQLite file {path} was deleted while the app held connections to it (inode "
                f"{opened[1]}); restore it there (SQLite's backup API, or a checkpointed copy moved into "
                "place): the app will not start a new, empty database in its place"
            )
        raise exc.InvalidatePoolError(
            f"the SQLite file {path} was replaced: this connection has inode {opened[1]} open, the path "
            f"now holds inode {now[1]}"
        )


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
