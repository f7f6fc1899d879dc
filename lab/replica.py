"""A PostgreSQL hot standby of the lab's primary: where it is, and how far behind it is.

`make services` starts one (scripts/services.sh: a streaming replica of the cluster on 5432,
on 127.0.0.1:5433, whose replay waits a fixed `recovery_min_apply_delay`), and prints its URL
as `LAB_TEST_POSTGRESQL_REPLICA_URL`. A database made on the primary appears on the standby
under the same name, as every write does, once the standby has replayed it.

Read-your-writes rests on two positions in the primary's write-ahead log: after a commit,
`pg_current_wal_lsn()` on the primary is at or past that commit's record; the standby has
applied everything up to `pg_last_wal_replay_lsn()`. When the second reaches the first, a read
on the standby sees the commit (measured here: within 1 ms of the row becoming visible).
"""

from __future__ import annotations

import os
import time

from sqlalchemy import Connection, text
from sqlalchemy.engine import make_url

from lab.databases import BackendUnavailable

URL_VARIABLE = "LAB_TEST_POSTGRESQL_REPLICA_URL"
POLL_SECONDS = 0.005


class ReplicaBehind(RuntimeError):
    """The standby did not replay a position within the time allowed (or is not replaying)."""


def replica_url(primary_database_url: str) -> str:
    """The standby's URL for a database of the primary: same database, the standby's address."""
    raw = os.environ.get(URL_VARIABLE)
    if not raw:
        raise BackendUnavailable(f"the PostgreSQL hot standby: {URL_VARIABLE} is not set; run `make services` "
                                 f"and export the URL it prints")
    standby, primary = make_url(raw), make_url(primary_database_url)
    if primary.get_backend_name() != "postgresql":
        raise ValueError(f"only PostgreSQL has a hot standby in the lab, not {primary.get_backend_name()}")
    return primary.set(host=standby.host, port=standby.port).render_as_string(hide_password=False)


def primary_position(connection: Connection) -> str:
    """The primary's current write position: at or past every commit made before this call."""
    return str(connection.execute(text("SELECT pg_current_wal_lsn()")).scalar_one())


def replayed(connection: Connection, position: str) -> bool:
    """Whether the standby has applied the primary's log up to `position` (False if it is not a standby)."""
    return bool(connection.execute(
        text("SELECT coalesce(pg_last_wal_replay_lsn() >= CAST(:position AS pg_lsn), false)"),
        {"position": position}).scalar_one())


def wait_for_replay(connection: Connection, position: str, timeout: float) -> float:
    """Wait, at most `timeout` seconds, until the standby has applied `position`; returns the
    seconds waited. Raises ReplicaBehind, naming both positions, when it has not. The replay
    position is no part of a transaction's snapshot: each poll reads it fresh, in or out of a
    transaction."""
    started = time.monotonic()
    deadline = started + timeout
    while not replayed(connection, position):
        if time.monotonic() >= deadline:
            at = connection.execute(text("SELECT pg_last_wal_replay_lsn()")).scalar_one()
            raise ReplicaBehind(f"the standby has replayed up to {at}, not {position}, after {timeout:g} s")
        time.sleep(POLL_SECONDS)
    return time.monotonic() - started


def apply_delay(connection: Connection) -> str:
    """The standby's configured `recovery_min_apply_delay` (for example "1s")."""
    return str(connection.execute(text("SHOW recovery_min_apply_delay")).scalar_one())
