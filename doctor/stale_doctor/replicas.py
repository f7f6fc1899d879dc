"""Reads on a lagging replica: replica_lag.

PostgreSQL: each pooled connection is asked once, when it is made, whether its server is in
recovery (`pg_is_in_recovery()`: a hot standby). Every commit of this process is stamped, per
table its INSERT / UPDATE / DELETE statements touched, with the wall-clock time just before its
COMMIT was sent (a lower bound of the commit's own timestamp). After a request's first read on
a standby connection, the doctor asks that standby for the commit time of the last transaction
it has replayed (`pg_last_xact_replay_timestamp()`, one round trip per request and connection,
on the driver's cursor so no SQLAlchemy event fires); replay follows commit order, so when that
time is older than this process's commit to a table the request read, the read could not see
that commit. A read that waited for the replica to replay the commit (read-your-writes) finds
the replay time past it and is not reported. The times come from one clock when the app and
the primary share a host; across hosts, their clocks' offset shifts the comparison.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy import CompoundSelect, Select
from sqlalchemy.sql.dml import UpdateBase

from .evidence import SERVER_ID_KEY
from .scopes import Scope

if TYPE_CHECKING:
    from .monitor import Monitor

RECOVERY_KEY = "stale_doctor.in_recovery"
WRITES_KEY = "stale_doctor.tables_written"
REMEMBER_SECONDS = 300.0  # a commit older than this is taken as replayed (and forgotten)


def describe_recovery(conn: Any) -> None:
    """Once per pooled PostgreSQL connection: is its server a standby?"""
    info = conn.info
    if RECOVERY_KEY in info or conn.dialect.name != "postgresql":
        return
    dbapi = conn.connection.dbapi_connection
    in_recovery = None
    try:
        cursor = dbapi.cursor()
        cursor.execute("SELECT pg_is_in_recovery()")
        in_recovery = bool(cursor.fetchone()[0])
        cursor.close()
    except Exception:  # a server that refuses: not known as a standby
        pass
    finally:
        try:
            dbapi.rollback()
        except Exception:
            pass
    info[RECOVERY_KEY] = in_recovery


def on_cursor_execute(m: "Monitor", conn: Any, context: Any) -> None:
    """Before a statement: remember the tables a DML statement writes on this connection."""
    compiled = getattr(context, "compiled", None)
    statement = getattr(compiled, "statement", None)
    if isinstance(statement, UpdateBase) and getattr(statement, "table", None) is not None:
        name = getattr(statement.table, "name", None)
        if name:
            conn.info.setdefault(WRITES_KEY, set()).add(name)


def on_commit(m: "Monitor", conn: Any) -> None:
    """Before COMMIT is sent: stamp the tables this transaction wrote."""
    written = conn.info.pop(WRITES_KEY, None)
    if written:
        before = time.time()
        for table in written:
            m.primary_commits[table] = before


def on_rollback(m: "Monitor", conn: Any) -> None:
    conn.info.pop(WRITES_KEY, None)


def after_cursor_execute(m: "Monitor", conn: Any, context: Any) -> None:
    """After a read on a standby: was a commit of this process to a table it read not yet replayed?

    Only a compiled SELECT counts (the ORM's, or Core's): a textual query, such as a
    read-your-writes wait polling the standby's replay position, reads no table."""
    if not conn.info.get(RECOVERY_KEY) or not m.primary_commits:
        return
    if not isinstance(getattr(getattr(context, "compiled", None), "statement", None), (Select, CompoundSelect)):
        return
    scope = m.watched()
    if scope is None or scope.kind != "request":
        return
    server_id = conn.info.get(SERVER_ID_KEY, "?")
    if server_id in scope.replica_checked:
        return
    now = time.time()
    for table, stamp in list(m.primary_commits.items()):
        if now - stamp > REMEMBER_SECONDS:
            m.primary_commits.pop(table, None)
    recent = {t: s for t, s in m.primary_commits.items() if t in scope.tables_read}
    if not recent:
        return  # not (yet) a read of a table this process wrote: look again at the next statement
    scope.replica_checked.add(server_id)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("SELECT extract(epoch FROM pg_last_xact_replay_timestamp()), pg_last_wal_replay_lsn()::text")
        replayed_at, position = cursor.fetchone()
    finally:
        cursor.close()
    if replayed_at is None:
        return
    replayed_at = float(replayed_at)
    unseen = sorted(t for t, stamp in recent.items() if replayed_at < stamp)
    if unseen:
        _report(m, scope, unseen, recent, replayed_at, position, server_id, now)


def _report(m: "Monitor", scope: Scope, unseen: list[str], recent: dict[str, float], replayed_at: float,
            position: str, server_id: str, now: float) -> None:
    newest = max(recent[t] for t in unseen)
    behind = newest - replayed_at
    m.emit("replica_lag",
           f"{scope.label()} read {', '.join(unseen)} on a hot standby (server connection {server_id}, in recovery) "
           f"whose last replayed commit is {behind:.3f} s older than this process's commit to "
           f"{', '.join(unseen)} {now - newest:.3f} s ago (replayed up to {position}): the read cannot see that "
           f"commit; wait until the replica has replayed the commit's position, or read from the primary",
           f"replica@{scope.endpoint}", scope, tables=unseen, server_connection_id=server_id,
           replayed_position=position, replay_behind_commit_seconds=round(behind, 3),
           commit_age_seconds=round(now - newest, 3))
