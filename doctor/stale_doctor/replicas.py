"""Reads on a lagging replica: replica_lag.

Each pooled connection is asked once, when it is made, whether its server is a replica:
PostgreSQL's `pg_is_in_recovery()` (a hot standby); on MariaDB, a read-only server that has
applied replicated transactions (`@@read_only` and a non-empty `@@gtid_slave_pos`: no
privilege needed). Every commit of this process is remembered per table its INSERT / UPDATE /
DELETE statements touched. After a request's first read of such a table on a replica
connection, the doctor asks that replica how far it has applied (one round trip per request
and connection, on the driver's cursor so no SQLAlchemy event fires); a read that waited for
the replica to apply the commit (read-your-writes) finds it applied and is not reported.

- PostgreSQL: the commit is stamped with the wall-clock time just before its COMMIT was sent
  (a lower bound of the commit's own timestamp), and compared with the commit time of the last
  transaction the standby replayed (`pg_last_xact_replay_timestamp()`); replay follows commit
  order, so an older replay time means the read could not see the commit. The times come from
  one clock when the app and the primary share a host; across hosts, their clocks' offset
  shifts the comparison.
- MariaDB: the commit's own GTID (`@@last_gtid`, read on the connection when the pool takes it
  back, after the COMMIT) is compared with the replica's `@@gtid_slave_pos`, domain by domain:
  exact, with no clock involved.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from sqlalchemy.sql.selectable import CompoundSelect, Select  # (not top-level names before SQLAlchemy 2.0)
from sqlalchemy.sql.dml import UpdateBase

from .evidence import SERVER_ID_KEY
from .scopes import Scope

if TYPE_CHECKING:
    from .monitor import Monitor

RECOVERY_KEY = "stale_doctor.in_recovery"
WRITES_KEY = "stale_doctor.tables_written"
COMMITTED_KEY = "stale_doctor.tables_committed"  # MariaDB: committed, GTID not read yet
REMEMBER_SECONDS = 300.0  # a commit older than this is taken as replayed (and forgotten)


def _is_mariadb(conn: Any) -> bool:
    return conn.dialect.name in ("mysql", "mariadb")


def describe_recovery(conn: Any) -> None:
    """Once per pooled PostgreSQL or MariaDB connection: is its server a replica?"""
    info = conn.info
    if RECOVERY_KEY in info or not (conn.dialect.name == "postgresql" or _is_mariadb(conn)):
        return
    dbapi = conn.connection.dbapi_connection
    in_recovery = None
    try:
        cursor = dbapi.cursor()
        cursor.execute("SELECT @@read_only = 1 AND @@gtid_slave_pos <> ''" if _is_mariadb(conn)
                       else "SELECT pg_is_in_recovery()")
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
    """Before COMMIT is sent: stamp the tables this transaction wrote (PostgreSQL), or keep them
    until the connection comes back to the pool, when the commit's GTID can be read (MariaDB)."""
    written = conn.info.pop(WRITES_KEY, None)
    if not written:
        return
    if _is_mariadb(conn):
        conn.info.setdefault(COMMITTED_KEY, set()).update(written)
        return
    before = time.time()
    for table in written:
        m.primary_commits[table] = before


def on_checkin(m: "Monitor", dbapi: Any, record: Any) -> None:
    """A MariaDB connection back in the pool after a commit: remember the commit's GTID
    (`@@last_gtid`: this session's last committed transaction) for each table it wrote."""
    committed = record.info.pop(COMMITTED_KEY, None)
    if not committed or dbapi is None:
        return
    cursor = dbapi.cursor()
    try:
        cursor.execute("SELECT @@last_gtid")
        gtid = str(cursor.fetchone()[0] or "")
    finally:
        cursor.close()
        dbapi.rollback()
    if gtid:
        now = time.time()
        for table in committed:
            m.primary_gtids[table] = (gtid, now)


def parse_gtids(position: str) -> dict[int, int]:
    """A MariaDB GTID list ("0-1-42,1-2-7") as {domain: sequence number}."""
    parsed: dict[int, int] = {}
    for part in filter(None, (p.strip() for p in position.split(","))):
        domain, _server, sequence = part.split("-")
        parsed[int(domain)] = max(parsed.get(int(domain), 0), int(sequence))
    return parsed


def applied(gtid: str, slave_position: str) -> bool:
    """Has a replica at `slave_position` applied the transaction `gtid` (sequence numbers grow
    within a domain, and a replica applies a domain in order)?"""
    domain, sequence = next(iter(parse_gtids(gtid).items()))
    return parse_gtids(slave_position).get(domain, 0) >= sequence


def on_rollback(m: "Monitor", conn: Any) -> None:
    conn.info.pop(WRITES_KEY, None)


def after_cursor_execute(m: "Monitor", conn: Any, context: Any) -> None:
    """After a read on a standby: was a commit of this process to a table it read not yet replayed?

    Only a compiled SELECT counts (the ORM's, or Core's): a textual query, such as a
    read-your-writes wait polling the standby's replay position, reads no table."""
    if not conn.info.get(RECOVERY_KEY) or not (m.primary_commits or m.primary_gtids):
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
    for table, (_gtid, stamp) in list(m.primary_gtids.items()):
        if now - stamp > REMEMBER_SECONDS:
            m.primary_gtids.pop(table, None)
    if _is_mariadb(conn):
        _check_gtids(m, conn, scope, server_id, now)
        return
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


def _check_gtids(m: "Monitor", conn: Any, scope: Scope, server_id: str, now: float) -> None:
    """MariaDB: has the replica applied this process's last commit to each table the request read?"""
    recent = {t: entry for t, entry in m.primary_gtids.items() if t in scope.tables_read}
    if not recent:
        return
    scope.replica_checked.add(server_id)
    cursor = conn.connection.dbapi_connection.cursor()
    try:
        cursor.execute("SELECT @@gtid_slave_pos")
        position = str(cursor.fetchone()[0] or "")
    finally:
        cursor.close()
    unseen = sorted(t for t, (gtid, _stamp) in recent.items() if not applied(gtid, position))
    if not unseen:
        return
    newest = max(recent[t][1] for t in unseen)
    commits = ", ".join(f"{t} {recent[t][0]}" for t in unseen)
    m.emit("replica_lag",
           f"{scope.label()} read {', '.join(unseen)} on a replica (server connection {server_id}, read-only, "
           f"following a primary) that has applied up to {position or '(nothing)'}, not this process's commit "
           f"to it ({commits}) {now - newest:.3f} s ago: the read cannot see that commit; wait until the replica "
           f"has applied the commit's GTID (MASTER_GTID_WAIT), or read from the primary",
           f"replica@{scope.endpoint}", scope, tables=unseen, server_connection_id=server_id,
           replayed_position=position, commit_positions={t: recent[t][0] for t in unseen},
           commit_age_seconds=round(now - newest, 3))


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
