"""Reads on a streaming replica, writes on the primary, and read-your-writes across requests.

Off unless a replica is configured (`LAB_REPLICA_URL`, in the app's config or the
environment): then every statement goes to the primary, as on SQLite and in the default
deployment. With one, `RoutingSession.get_bind` (SQLAlchemy's documented custom-routing
pattern, on Flask-SQLAlchemy's own Session so its binds still work) sends flushes, UPDATE and
DELETE statements, every statement of an unsafe request (POST...) and of a job outside a
request to the primary, and the reads of a safe request (GET, HEAD) to the replica.

A replica is behind its primary; a client that has just written must not read from it as if
it were not. Read-your-writes: after a request commits, the primary's write position
(lab/replica.py: PostgreSQL's `pg_current_wal_lsn()`, at or past the commit's record; MariaDB's
`@@gtid_binlog_pos`, which holds the commit's GTID) goes back to the client in the
`db_position` cookie (and the `X-DB-Position` header, for API clients, who send it back in the
same header). A later read by that client first waits, at most `LAB_REPLICA_WAIT_SECONDS`
(2 s), until the replica has replayed that position, then reads there; if it has not by then,
or the replica does not answer, the request reads from the primary instead, and says so in its
`X-DB-Read` header (with the replica's applied position and the time waited: the lag, measured)
and in the log. The position travels with the client, not in a process, so it holds across
gunicorn workers and servers.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app, g, has_request_context, request
from flask_sqlalchemy import SQLAlchemy
from flask_sqlalchemy.session import Session
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql.dml import UpdateBase
from werkzeug.wrappers import Response

from lab import labmode
from lab.engine import engine_options
from lab.replica import ReplicaBehind, backend_of, primary_position, replay_position, wait_for_replay

REPLICA_URL_KEY = "LAB_REPLICA_URL"
WAIT_KEY = "LAB_REPLICA_WAIT_SECONDS"
DEFAULT_WAIT_SECONDS = 2.0
CONNECT_TIMEOUT_SECONDS = 2  # a replica that does not answer costs a read this long, not a hang
POSITION_COOKIE = "db_position"
POSITION_HEADER = "X-DB-Position"
READ_HEADER = "X-DB-Read"
POSITION_MAX_AGE_SECONDS = 300
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# A PostgreSQL log sequence number (16/B374D848) or a MariaDB GTID list (0-1-42,1-2-7).
_POSITION = re.compile(r"^(?:[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}|\d{1,10}-\d{1,10}-\d{1,20}(?:,\d{1,10}-\d{1,10}-\d{1,20}){0,31})$")
EXTENSION_KEY = "lab_routing"


@dataclass
class Router:
    replica: Engine
    read_your_writes: bool
    wait_seconds: float

    def read_engine(self, primary: Engine) -> Engine:
        """The engine this request's reads use, decided once per request (at its first read)."""
        choice = g.get("lab_read_engine")
        if choice is None:
            choice, g.lab_db_read = self._decide()
            g.lab_read_engine = choice
        return primary if choice == "primary" else self.replica

    def _decide(self) -> tuple[str, str]:
        position = _client_position() if self.read_your_writes else None
        where = self.replica.url.render_as_string(hide_password=True)
        try:
            with self.replica.connect() as connection:
                replayed_at = replay_position(connection)
                if position is None:
                    return "replica", f"replica; replayed {replayed_at}"
                try:
                    waited = wait_for_replay(connection, position, self.wait_seconds)
                except ReplicaBehind as behind:
                    current_app.logger.warning("reading from the primary: %s (%s)", behind, where)
                    return "primary", f"primary; {behind}"
                return "replica", f"replica; replayed {position}; waited {waited:.3f} s"
        except DBAPIError as error:
            current_app.logger.warning("reading from the primary: the replica %s does not answer: %s", where, error.orig)
            return "primary", f"primary; the replica {where} does not answer ({type(error.orig).__name__})"


class RoutingSession(Session):
    """Flask-SQLAlchemy's Session whose reads in a safe request may go to the replica."""

    def get_bind(self, mapper: Any | None = None, clause: Any | None = None, bind: Any | None = None,
                 **kwargs: Any) -> Any:
        primary = super().get_bind(mapper=mapper, clause=clause, bind=bind, **kwargs)
        if bind is not None or self._flushing or isinstance(clause, UpdateBase):
            return primary  # writes always go to the primary
        if not has_request_context() or request.method not in SAFE_METHODS:
            return primary  # a write request reads what it is about to change where it changes it
        router: Router | None = current_app.extensions.get(EXTENSION_KEY)
        if router is None or primary is not self._db.engine:
            return primary
        return router.read_engine(primary)


@event.listens_for(RoutingSession, "after_commit")
def _remember_commit(_session: Session) -> None:
    if has_request_context():
        g.lab_committed = True


def install(app: Flask, db: SQLAlchemy, read_your_writes: bool = True) -> Router | None:
    """Route reads to the configured replica (none configured: nothing changes)."""
    url = app.config.get(REPLICA_URL_KEY) or os.environ.get(REPLICA_URL_KEY)
    if not url:
        return None
    if not issubclass(db.session.session_factory.class_, RoutingSession):
        raise RuntimeError("a replica is configured but db.session is not a RoutingSession: pass "
                           "SQLAlchemy(session_options={'class_': RoutingSession})")
    options = engine_options(url)
    options["connect_args"] = {**options.get("connect_args", {}), "connect_timeout": CONNECT_TIMEOUT_SECONDS}
    backend_of(url)  # a PostgreSQL standby or a MariaDB replica: the positions it can wait on
    router = Router(create_engine(url, **options), read_your_writes,
                    float(app.config.get(WAIT_KEY) or os.environ.get(WAIT_KEY) or DEFAULT_WAIT_SECONDS))
    app.extensions[EXTENSION_KEY] = router
    if labmode.enabled():
        labmode.watch_engine(router.replica)

    @app.after_request
    def _say_where(response: Response) -> Response:
        if g.get("lab_db_read"):
            response.headers[READ_HEADER] = g.lab_db_read
        if read_your_writes and g.get("lab_committed") and response.status_code < 400:
            with db.engine.connect() as connection:
                position = primary_position(connection)  # after the commit: at or past its record
            response.headers[POSITION_HEADER] = position
            response.set_cookie(POSITION_COOKIE, position, max_age=POSITION_MAX_AGE_SECONDS, httponly=True,
                                samesite="Lax")
        return response

    return router


def _client_position() -> str | None:
    """The write position this client last got back, if it sent a well-formed one."""
    value = request.headers.get(POSITION_HEADER) or request.cookies.get(POSITION_COOKIE)
    return value if value and _POSITION.match(value) else None
