"""The lab's replicas of its primaries: where they are, how far behind, and waiting for a write.

`make services` starts one per server backend (scripts/services.sh) and prints its URL:
- PostgreSQL (`LAB_TEST_POSTGRESQL_REPLICA_URL`): a hot standby of the cluster on 5432, on
  127.0.0.1:5433, streaming its write-ahead log and replaying it `recovery_min_apply_delay`
  late. A position is a log sequence number: after a commit, `pg_current_wal_lsn()` on the
  primary is at or past the commit's record; the standby has applied everything up to
  `pg_last_wal_replay_lsn()`.
- MariaDB (`LAB_TEST_MARIADB_REPLICA_URL`): a second server on 127.0.0.1:3307 following the
  primary's binary log (GTID, row format) for the `lab%` databases, read-only, whose SQL thread
  applies each transaction `MASTER_DELAY` seconds late. A position is a GTID list: after a
  commit, `@@gtid_binlog_pos` on the primary holds it; the replica has applied what
  `@@gtid_slave_pos` holds, and `MASTER_GTID_WAIT()` waits, on the server, until it does.

A database made on the primary appears on the replica under the same name, as every write
does, once the replica has applied it.
"""

from __future__ import annotations

import os
import time

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from lab.databases import BackendUnavailable

URL_VARIABLES = {"postgresql": "LAB_TEST_POSTGRESQL_REPLICA_URL", "mariadb": "LAB_TEST_MARIADB_REPLICA_URL"}
POLL_SECONDS = 0.005


class ReplicaBehind(RuntimeError):
    """The replica did not apply a position within the time allowed (or is not replicating)."""


def backend_of(url: str) -> str:
    """"postgresql" or "mariadb" for a URL of either (MariaDB speaks the mysql dialect)."""
    name = make_url(url).get_backend_name()
    if name == "postgresql":
        return "postgresql"
    if name in ("mysql", "mariadb"):
        return "mariadb"
    raise ValueError(f"the lab's replicas are PostgreSQL's and MariaDB's, not {name}'s")


def replica_url(primary_database_url: str) -> str:
    """The replica's URL for a database of the primary: same database, the replica's address."""
    variable = URL_VARIABLES[backend_of(primary_database_url)]
    raw = os.environ.get(variable)
    if not raw:
        raise BackendUnavailable(f"the replica: {variable} is not set; run `make services` and export the URL it prints")
    standby, primary = make_url(raw), make_url(primary_database_url)
    return primary.set(host=standby.host, port=standby.port).render_as_string(hide_password=False)


def _backend(connection: Connection) -> str:
    return "postgresql" if connection.dialect.name == "postgresql" else "mariadb"


def primary_position(connection: Connection) -> str:
    """The primary's current write position: at or past every commit made before this call."""
    if _backend(connection) == "postgresql":
        return str(connection.execute(text("SELECT pg_current_wal_lsn()")).scalar_one())
    return str(connection.execute(text("SELECT @@GLOBAL.gtid_binlog_pos")).scalar_one())


def replay_position(connection: Connection) -> str:
    """How far the replica has applied its primary's log (read fresh: no part of a snapshot)."""
    if _backend(connection) == "postgresql":
        return str(connection.execute(text("SELECT pg_last_wal_replay_lsn()")).scalar_one())
    return str(connection.execute(text("SELECT @@GLOBAL.gtid_slave_pos")).scalar_one())


def replayed(connection: Connection, position: str) -> bool:
    """Whether the replica has applied the primary's log up to `position` (False if it is no replica)."""
    if _backend(connection) == "postgresql":
        return bool(connection.execute(
            text("SELECT coalesce(pg_last_wal_replay_lsn() >= CAST(:position AS pg_lsn), false)"),
            {"position": position}).scalar_one())
    return connection.execute(text("SELECT MASTER_GTID_WAIT(:position, 0)"), {"position": position}).scalar_one() == 0


def wait_for_replay(connection: Connection, position: str, timeout: float) -> float:
    """Wait, at most `timeout` seconds, until the replica has applied `position`; returns the
    seconds waited. Raises ReplicaBehind, naming both positions, when it has not. PostgreSQL's
    replay position is polled, MariaDB's waited for by the server (MASTER_GTID_WAIT); neither is
    part of a transaction's snapshot, so this works in or out of a transaction."""
    started = time.monotonic()
    if _backend(connection) == "mariadb":
        outcome = connection.execute(text("SELECT MASTER_GTID_WAIT(:position, :timeout)"),
                                     {"position": position, "timeout": timeout}).scalar_one()
        if outcome != 0:
            raise ReplicaBehind(f"the replica has applied up to {replay_position(connection) or '(nothing)'}, "
                                f"not {position}, after {timeout:g} s")
        return time.monotonic() - started
    deadline = started + timeout
    while not replayed(connection, position):
        if time.monotonic() >= deadline:
            raise ReplicaBehind(f"the replica has applied up to {replay_position(connection)}, not {position}, "
                                f"after {timeout:g} s")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


def apply_delay(connection: Connection) -> str:
    """The replica's configured delay: PostgreSQL's `recovery_min_apply_delay` ("1s"), MariaDB's
    `MASTER_DELAY` ("1s"; "not replicating" when the replica has no primary configured)."""
    if _backend(connection) == "postgresql":
        return str(connection.execute(text("SHOW recovery_min_apply_delay")).scalar_one())
    status = connection.execute(text("SHOW SLAVE STATUS")).mappings().first()
    return f"{status['SQL_Delay']}s" if status else "not replicating"


def is_replica(connection: Connection) -> bool:
    """Whether the server behind `connection` is a replica (a standby in recovery; a read-only
    MariaDB server following a primary)."""
    if _backend(connection) == "postgresql":
        return bool(connection.execute(text("SELECT pg_is_in_recovery()")).scalar_one())
    return bool(connection.execute(text("SELECT @@GLOBAL.read_only")).scalar_one()) and \
        connection.execute(text("SHOW SLAVE STATUS")).first() is not None


def serves_connection(connection: Connection, conn_id: str, database: str) -> bool:
    """Is `conn_id` (an X-DB-Conn value) a session of this replica, connected to `database`?
    PostgreSQL pids are unique on a host; MariaDB's connection ids count per server, so the
    session's database is checked too."""
    if not conn_id.isdigit() or not is_replica(connection):
        return False
    if _backend(connection) == "postgresql":
        query = "SELECT EXISTS (SELECT 1 FROM pg_stat_activity WHERE pid = :id AND datname = :db)"
    else:
        query = "SELECT EXISTS (SELECT 1 FROM information_schema.processlist WHERE id = :id AND db = :db)"
    return bool(connection.execute(text(query), {"id": int(conn_id), "db": database}).scalar_one())
