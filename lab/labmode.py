"""Lab mode: what the scenarios need to see inside a running app, off unless LAB_MODE=1.

Identical in the broken and the fixed apps (each calls `install` the same way), so it can
never be the difference between them. It adds:
- `X-DB-Conn`: the server connection id (PostgreSQL backend pid, MariaDB CONNECTION_ID,
  for SQLite the process and driver connection) that served the request's session;
- a transaction log: every BEGIN / COMMIT / ROLLBACK with its process, thread, actor (the
  `X-Lab-Actor` request header) and server connection id, appended to `LAB_TXLOG`;
- `/_lab/hold/<key>`: occupies its worker thread until the scenario creates the file
  `<LAB_CONTROL_DIR>/release-<key>`, so the next request must go to another thread;
- `/_lab/take-pool?seconds=S`: sessions held elsewhere in this worker (a thread of its own)
  check out every connection the app's pool can give, for S seconds, so the worker's requests
  wait for the pool (the fault run's `pool_exhausted`); answers once they are all taken;
- `/_lab/ping`: a trivial endpoint that touches nothing;
- with `LAB_SQL_LOG=<path>`, SQLAlchemy's own engine log at DEBUG (each statement and each row
  it returned, as the driver gave them) appended to that file, one line per record: what the
  database answered, to compare with what the ORM objects say.
None of it opens a transaction of its own or keeps an ORM object.

`LAB_EXTENSIONS` (independent of LAB_MODE) names extensions to install the same way in every
variant, as `module:callable` called with (app, session): `make doctor` installs the
stale-data doctor this way, so it is never the difference between a broken app and the fixed
one. The ground imports no extension: they are found by name at run time.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any, Callable

from flask import Flask, Response, g, has_app_context, has_request_context, request
from sqlalchemy import Engine, event
from sqlalchemy.orm import Session, scoped_session

HOLD_LIMIT_SECONDS = 30.0
TAKE_POOL_LIMIT_SECONDS = 10.0
_TAKING_POOL = threading.Lock()  # one take at a time per process: a second one answers "busy"


def enabled() -> bool:
    return os.environ.get("LAB_MODE") == "1"


def install(app: Flask, session: Callable[[], Session], engine: Callable[[], Engine]) -> None:
    install_extensions(app, session)
    if not enabled():
        return
    with app.app_context():
        watch_engine(engine())
    if os.environ.get("LAB_SQL_LOG"):
        log_sql_to(os.environ["LAB_SQL_LOG"])

    @app.before_request
    def _remember_actor() -> None:
        # Kept on the app context: the session's final ROLLBACK runs at its teardown,
        # after the request context is gone.
        g.lab_actor = request.headers.get("X-Lab-Actor", "-")

    @app.after_request
    def _db_conn_header(response: Response) -> Response:
        try:
            response.headers["X-DB-Conn"] = _request_connection_id(session)
        except Exception as error:  # a broken variant's dead session must not hide X-Served-By
            response.headers["X-DB-Conn"] = f"error:{type(error).__name__}"
        return response

    @app.get("/_lab/hold/<key>")
    def _hold(key: str) -> dict[str, Any]:
        control = Path(os.environ["LAB_CONTROL_DIR"])
        release = control / f"release-{key}"
        # Tell the scenario which process and thread are now busy (written whole, then renamed).
        (control / f"held-{key}.tmp").write_text(f"{os.getpid()}/{threading.get_native_id()}")
        (control / f"held-{key}.tmp").rename(control / f"held-{key}")
        deadline = time.monotonic() + HOLD_LIMIT_SECONDS
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        return {"released": release.exists()}

    @app.get("/_lab/take-pool")
    def _take_pool() -> dict[str, Any]:
        seconds = min(float(request.args.get("seconds", "3")), TAKE_POOL_LIMIT_SECONDS)
        return {"pid": os.getpid(), **take_pool(engine(), seconds)}

    @app.get("/_lab/ping")
    def _ping() -> dict[str, Any]:
        return {"pid": os.getpid()}


def take_pool(engine: Engine, seconds: float) -> dict[str, Any]:
    """Sessions held elsewhere: a thread of this process opens Sessions on `engine` and checks
    out a connection for each until the pool has none left to give (its size plus its
    overflow), holds them for `seconds`, then closes them. Returns once they are all taken (or
    after TAKE_POOL_LIMIT_SECONDS, with what it has), saying how many; "busy" at once when a
    take is already under way in this process."""
    if not _TAKING_POOL.acquire(blocking=False):
        return {"held": 0, "busy": True}
    pool = engine.pool
    capacity = pool.size() + max(0, getattr(pool, "_max_overflow", 0))  # QueuePool: 5 + 10 by default
    taken = threading.Event()
    sessions: list[Session] = []

    def hold() -> None:
        deadline = time.monotonic() + TAKE_POOL_LIMIT_SECONDS
        try:
            while len(sessions) < capacity and time.monotonic() < deadline:
                session = Session(bind=engine)
                session.connection()  # waits (pool timeout) while the app's requests hold them
                sessions.append(session)
        finally:
            taken.set()
            time.sleep(seconds)
            for session in sessions:
                session.close()
            _TAKING_POOL.release()

    threading.Thread(target=hold, name="lab-take-pool", daemon=True).start()
    taken.wait(TAKE_POOL_LIMIT_SECONDS + 1)
    return {"held": len(sessions), "capacity": capacity, "busy": False}


def log_sql_to(path: str) -> None:
    """SQLAlchemy's engine logger at DEBUG into `path`: statements, parameters and result rows
    (checked per connection and per result, so engines made before this call log too)."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(process)d/%(thread)d %(message)s"))
    logger = logging.getLogger("sqlalchemy.engine.Engine")
    logger.setLevel(logging.DEBUG)
    logger.addHandler(handler)
    logger.propagate = False  # to the file only, not to whatever the server logs


def install_extensions(app: Flask, session: Callable[[], Session]) -> None:
    """Each `module:callable` of LAB_EXTENSIONS (comma-separated), called as callable(app, session)."""
    for spec in filter(None, (item.strip() for item in os.environ.get("LAB_EXTENSIONS", "").split(","))):
        module_name, _, attribute = spec.partition(":")
        getattr(importlib.import_module(module_name), attribute)(app, session)


def watch_engine(engine: Engine) -> None:
    """Record each connection's server id and log the transaction events of `engine`."""

    @event.listens_for(engine, "connect")
    def _remember_server_id(dbapi_connection: Any, record: Any) -> None:
        record.info["server_conn_id"] = server_connection_id(dbapi_connection, engine.dialect.name)

    @event.listens_for(engine, "checkout")
    def _note_checkout(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if has_request_context():
            g.lab_checked_out = record.info.get("server_conn_id", "?")

    for name in ("begin", "commit", "rollback"):
        event.listen(engine, name, _logger(name.upper()))


def server_connection_id(dbapi_connection: Any, dialect_name: str) -> str:
    if dialect_name == "sqlite":
        return f"sqlite:{os.getpid()}:{id(dbapi_connection):x}"
    cursor = dbapi_connection.cursor()
    cursor.execute("SELECT pg_backend_pid()" if dialect_name == "postgresql" else "SELECT CONNECTION_ID()")
    value = cursor.fetchone()[0]
    cursor.close()
    # The driver opened a transaction for that SELECT; end it, or the request's own snapshot
    # would start here (and SET TRANSACTION ISOLATION LEVEL would be refused).
    dbapi_connection.rollback()
    return str(value)


def connection_id_of(session: Session) -> str | None:
    """The server id of the connection a session holds now, or None when it holds none."""
    if isinstance(session, scoped_session):
        session = session()  # the current scope's Session, not the registry
    if not session.in_transaction():
        return None
    fairy = session.connection().connection  # the transaction's connection: no new BEGIN
    return str(fairy.info.get("server_conn_id", "?"))


def _request_connection_id(session: Callable[[], Session]) -> str:
    held = connection_id_of(session())
    if held is not None:
        return held
    return str(g.get("lab_checked_out", "none"))


def _logger(event_name: str) -> Callable[[Any], None]:
    def _log(connection: Any) -> None:
        path = os.environ.get("LAB_TXLOG")
        if not path:
            return
        record = {
            "t": time.time(),
            "pid": os.getpid(),
            "thread": threading.get_native_id(),
            "actor": g.get("lab_actor", "-") if has_app_context() else "-",
            "event": event_name,
            "conn": connection.connection.info.get("server_conn_id", "?"),
        }
        # An isolation level the transaction asked for itself (its connection's execution
        # option): known without a round trip; the server's default is not named.
        isolation = connection.get_execution_options().get("isolation_level")
        if isolation and event_name == "BEGIN":
            record["isolation"] = isolation
        # One short line per write with O_APPEND: lines from several workers do not interleave.
        with open(path, "a", encoding="utf-8") as log:
            log.write(json.dumps(record) + "\n")

    return _log


AWAIT_JOB_LIMIT_SECONDS = 20.0


def name_job_actor(name: str) -> None:
    """Inside a job's app context: its transaction events are logged under `name` (lab mode only)."""
    if enabled():
        g.lab_actor = name


def await_job(result: Any) -> None:
    """Lab mode, asked by the request (`X-Lab-Await-Job: 1`): wait, bounded, until the job just
    sent has finished, so the scenario knows the worker ran before this request goes on. Where
    the app sends the job decides what that proves: after its commit (fixed) it only delays
    the answer; before the commit (enqueue_before_commit) the worker runs while the edit is
    still uncommitted. Inert otherwise."""
    if not (enabled() and has_request_context() and request.headers.get("X-Lab-Await-Job") == "1"):
        return
    try:
        result.get(timeout=AWAIT_JOB_LIMIT_SECONDS, propagate=False, interval=0.05)
    except Exception:  # a timeout (no worker): the request goes on; the scenario sees no result
        pass
