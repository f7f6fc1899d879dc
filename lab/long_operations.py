"""Why a long operation inside one session or transaction is harmful: each point measured live.

The measurements behind notebooks/long_operations. Every function takes the URL of a private
database that the caller created and seeded (lab.seed: create_schema + seed(engine, N)); it
may bump row versions there but leaves the schema as it found it. It returns a
plain JSON-serialisable dict of what it measured, with a one-line `finding` in plain words
built from those figures. A point that exists on one backend only returns
{"applies": False, "reason": ...} on the others. Everything a function opens (sessions,
connections, engines) is closed in a `finally`, also when the measurement fails.

1. stale_snapshot        a transaction that read a row keeps its snapshot while others commit
2. row_lock_wait         a long transaction's row lock makes a second writer wait, then fail
3. pool_exhaustion       long sessions hold every pooled connection; the next request times out
4. vacuum_held_back      (PostgreSQL) an idle-in-transaction session keeps dead rows alive
5. wal_growth            (SQLite) an open reader keeps the WAL file from being reset
6. session_memory        a long session holding its objects grows; a session per batch does not

`python -m lab.long_operations --db sqlite|postgresql|mariadb|all` makes a private database,
seeds it, runs every point, prints the findings and drops the database.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time
import tracemalloc
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from sqlalchemy import Engine, create_engine, func, select, text, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, TimeoutError as PoolTimeoutError
from sqlalchemy.orm import Session

from lab import databases, seed
from lab.engine import LOCK_TIMEOUT_MS, backend_of, configure_engine, engine_options, server_version
from lab.models import Transaction

CLI_SEED_SIZE = 2_000


# --------------------------------------------------------------------------- helpers


@contextmanager
def lab_engine(url: str, **overrides: Any) -> Iterator[Engine]:
    """The app's engine for `url` (its guards and lab.engine's SQLite recipe), disposed after."""
    engine = configure_engine(create_engine(url, **{**engine_options(url), **overrides}))
    try:
        yield engine
    finally:
        engine.dispose()


def _error(error: BaseException) -> dict[str, Any]:
    """The exception a caller would see, and the driver's exception behind it."""
    driver = getattr(error, "orig", None)
    shown = driver if driver is not None else error
    message = str(shown).split("\n")[0].split(" (Background on this error")[0].strip()
    return {
        "error_class": f"{type(error).__module__}.{type(error).__name__}",
        "driver_error_class": None if driver is None else f"{type(driver).__module__}.{type(driver).__name__}",
        "message": message,
    }


def _row_ids(engine: Engine) -> tuple[int, int]:
    """The smallest and largest transaction id: rows every seeded database has."""
    with engine.connect() as connection:
        low, high = connection.execute(select(func.min(Transaction.id), func.max(Transaction.id))).one()
    if low is None or low == high:
        raise RuntimeError("the database needs at least two seeded transactions (lab.seed.seed)")
    return int(low), int(high)


def _version(connection_or_session: Any, row_id: int) -> int:
    """The row's version as this connection's snapshot sees it (a column read, no ORM object)."""
    return int(connection_or_session.execute(select(Transaction.version).where(Transaction.id == row_id)).scalar_one())


def _seconds(value: float) -> float:
    return round(value, 3)


def not_applicable(backend: str, reason: str) -> dict[str, Any]:
    return {"applies": False, "backend": backend, "reason": reason}


# --------------------------------------------------------------------------- 1. stale snapshot


def stale_snapshot(url: str, commits: int = 5, interval_s: float = 0.1) -> dict[str, Any]:
    """A transaction reads a row; another connection commits `commits` changes to it, one every
    `interval_s`; after each commit the transaction reads the row again. Then it ends and reads
    once more. Runs at the backend's default isolation level, and on PostgreSQL (whose default,
    READ COMMITTED, re-reads committed rows) at REPEATABLE READ too.

    The reads select the column, not an ORM object, so what is measured is the database
    snapshot, not the identity map (that is the myths' subject).
    """
    backend = backend_of(url)
    levels: list[str | None] = [None] + (["REPEATABLE READ"] if backend == "postgresql" else [])
    runs = []
    with lab_engine(url) as engine:
        row_id = _row_ids(engine)[0]
        for level in levels:
            bind = engine if level is None else engine.execution_options(isolation_level=level)
            with Session(bind) as reader:
                runs.append(_stale_run(engine, reader, row_id, commits, interval_s, default=level is None))
    return {"applies": True, "backend": backend, "row_id": row_id, "runs": runs, "finding": _stale_finding(runs)}


def _stale_run(engine: Engine, reader: Session, row_id: int, commits: int, interval_s: float,
               default: bool) -> dict[str, Any]:
    first_read = _version(reader, row_id)  # the snapshot is taken here, at the first read
    level = reader.connection().get_isolation_level()
    reads = []
    first_commit_at: float | None = None
    for n in range(1, commits + 1):
        time.sleep(interval_s)  # lets time pass between commits, so "seconds stale" means something
        with engine.begin() as writer:
            writer.execute(update(Transaction).where(Transaction.id == row_id)
                           .values(version=Transaction.version + 1))
            committed = _version(writer, row_id)
        first_commit_at = first_commit_at or time.perf_counter()
        seen = _version(reader, row_id)
        reads.append({"commit": n, "committed_version": committed, "seen_version": seen,
                      "seconds_since_first_commit": _seconds(time.perf_counter() - first_commit_at)})
    reader.commit()  # the long transaction ends
    after_end = _version(reader, row_id)
    stale = [r for r in reads if r["seen_version"] < r["committed_version"]]
    last = reads[-1]
    return {
        "isolation_level": level,
        "default_level": default,
        "version_at_first_read": first_read,
        "reads": reads,
        "stale_reads": len(stale),
        "commits_not_seen_at_last_read": last["committed_version"] - last["seen_version"],
        "seconds_stale": stale[-1]["seconds_since_first_commit"] if stale else 0.0,
        "stale_until_transaction_ended": bool(stale) and stale[-1] is last,
        "version_after_transaction_ended": after_end,
        "fresh_after_transaction_ended": after_end == last["committed_version"],
    }


def _stale_finding(runs: list[dict[str, Any]]) -> str:
    parts = []
    for run in runs:
        level = f"{run['isolation_level']}{' (default)' if run['default_level'] else ''}"
        total = len(run["reads"])
        if run["stale_reads"] == 0:
            parts.append(f"at {level} the open transaction saw each of {total} commits at once")
        else:
            parts.append(
                f"at {level} the open transaction kept reading version {run['version_at_first_read']} "
                f"through {run['stale_reads']} of {total} commits ({run['seconds_stale']:.2f} s)"
                + (", until it ended" if run["stale_until_transaction_ended"] else "")
                + f", then read version {run['version_after_transaction_ended']}"
            )
    return "; ".join(parts)


# --------------------------------------------------------------------------- 2. row locks


def row_lock_wait(url: str, timeout_s: int = 1) -> dict[str, Any]:
    """A long operation updates a row and keeps its transaction open. A second writer, its lock
    wait limited to `timeout_s` on its own connection (PostgreSQL lock_timeout, MariaDB
    innodb_lock_wait_timeout, SQLite busy timeout), updates the same row: it waits, then fails.
    The same writer then updates a different row (PostgreSQL and MariaDB lock rows; SQLite
    locks the whole database for writing), and, once the long operation has ended, the first
    row again. Every transaction here is rolled back: no row changes.
    """
    backend = backend_of(url)
    with ExitStack() as stack:
        engine = stack.enter_context(lab_engine(url))
        locked_id, other_id = _row_ids(engine)
        long_operation = stack.enter_context(Session(engine))
        long_operation.execute(update(Transaction).where(Transaction.id == locked_id)
                               .values(version=Transaction.version + 1))  # holds the row lock from here
        same_row = _timed_update(engine, locked_id, timeout_s)
        other_row = _timed_update(engine, other_id, timeout_s)
        long_operation.rollback()  # the long operation ends
        after_end = _timed_update(engine, locked_id, timeout_s)
    other_row_waited = other_row["outcome"] == "error"
    result = {
        "applies": True,
        "backend": backend,
        # What the measurement says was locked: only that row, or every row (SQLite's one write lock).
        "lock_scope": "database" if other_row_waited else "row",
        "app_default_timeout_s": LOCK_TIMEOUT_MS / 1000,
        "same_row": same_row,
        "other_row": other_row,
        "same_row_after_long_operation_ended": after_end,
    }
    result["finding"] = _lock_finding(result)
    return result


def _set_lock_timeout(connection: Any, timeout_s: int) -> tuple[str, float]:
    """Limit this connection's lock wait; return the setting as the server reports it back."""
    dialect = connection.dialect.name
    if dialect == "postgresql":
        connection.execute(text(f"SET LOCAL lock_timeout = '{int(timeout_s)}s'"))
        shown = connection.execute(text("SHOW lock_timeout")).scalar_one()
        return f"lock_timeout = {shown}", _postgres_seconds(shown)
    if dialect == "sqlite":
        connection.execute(text(f"PRAGMA busy_timeout = {int(timeout_s * 1000)}"))
        shown = connection.execute(text("PRAGMA busy_timeout")).scalar_one()
        return f"busy_timeout = {shown} ms", int(shown) / 1000
    connection.execute(text(f"SET SESSION innodb_lock_wait_timeout = {int(timeout_s)}"))
    shown = connection.execute(text("SELECT @@SESSION.innodb_lock_wait_timeout")).scalar_one()
    return f"innodb_lock_wait_timeout = {shown}", float(shown)


def _postgres_seconds(shown: str) -> float:
    number, unit = re.fullmatch(r"(\d+)\s*(ms|s|min)?", shown).groups()  # type: ignore[union-attr]
    return int(number) * {"ms": 0.001, "s": 1.0, "min": 60.0, None: 0.001}[unit]


def _timed_update(engine: Engine, row_id: int, timeout_s: int) -> dict[str, Any]:
    """One writer's UPDATE of `row_id` with a short lock wait: how long it took, how it ended."""
    with engine.connect() as connection:
        transaction = connection.begin()
        try:
            setting, configured = _set_lock_timeout(connection, timeout_s)
            started = time.perf_counter()
            try:
                connection.execute(update(Transaction).where(Transaction.id == row_id)
                                   .values(version=Transaction.version + 1))
                outcome: dict[str, Any] = {"outcome": "updated"}
            except DBAPIError as error:
                outcome = {"outcome": "error", **_error(error)}
            waited = time.perf_counter() - started
        finally:
            transaction.rollback()
    return {"row_id": row_id, "timeout_setting": setting, "configured_timeout_s": configured,
            "waited_s": _seconds(waited), **outcome}


def _lock_finding(result: dict[str, Any]) -> str:
    same, other, after = result["same_row"], result["other_row"], result["same_row_after_long_operation_ended"]

    def told(attempt: dict[str, Any]) -> str:
        if attempt["outcome"] == "updated":
            return f"went through in {attempt['waited_s']:.2f} s"
        return f"waited {attempt['waited_s']:.2f} s and failed ({attempt['driver_error_class']}: {attempt['message']})"

    return (f"while a long transaction kept a row it updated, a second writer's update of that row "
            f"({same['timeout_setting']}) {told(same)}; its update of another row {told(other)}, so the lock "
            f"covered the {result['lock_scope']}; once the long transaction ended, the first update {told(after)}")


# --------------------------------------------------------------------------- 3. pool exhaustion


def pool_exhaustion(url: str, pool_size: int = 2, pool_timeout: float = 1.0) -> dict[str, Any]:
    """An engine with `pool_size` connections and no overflow. As many long sessions as the pool
    has connections each begin a transaction (a session keeps its connection until it ends);
    one more request then waits `pool_timeout` for a connection and fails. When one long
    session ends, the same request gets a connection at once."""
    backend = backend_of(url)
    with ExitStack() as stack:
        engine = stack.enter_context(
            lab_engine(url, pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout))
        holders = [stack.enter_context(Session(engine)) for _ in range(pool_size)]
        for holder in holders:
            holder.execute(select(1))  # checks a connection out until the session ends
        status_when_full = engine.pool.status()
        request = stack.enter_context(Session(engine))
        started = time.perf_counter()
        try:
            request.execute(select(1))
            refused: dict[str, Any] = {"outcome": "got a connection"}
        except PoolTimeoutError as error:
            refused = {"outcome": "error", **_error(error)}
        waited = time.perf_counter() - started
        request.close()
        holders[0].close()  # one long session ends and returns its connection
        started = time.perf_counter()
        request.execute(select(1))
        after_release = time.perf_counter() - started
    result = {
        "applies": True,
        "backend": backend,
        "pool_class": type(engine.pool).__name__,
        "pool_size": pool_size,
        "max_overflow": 0,
        "pool_timeout_s": pool_timeout,
        "long_sessions": pool_size,
        "pool_status_when_full": status_when_full,
        "request": {"waited_s": _seconds(waited), **refused},
        "request_after_one_session_ended": {"waited_s": _seconds(after_release), "outcome": "got a connection"},
    }
    request_result = result["request"]
    if request_result["outcome"] == "error":
        told = f"waited {request_result['waited_s']:.2f} s and failed: {request_result['error_class']}: {request_result['message']}"
    else:
        told = f"got a connection after {request_result['waited_s']:.2f} s (the pool was not exhausted)"
    result["finding"] = (f"with {pool_size} long sessions holding all {pool_size} pooled connections "
                         f"(max_overflow 0, pool_timeout {pool_timeout:g} s), the next request {told}; "
                         f"once one session ended it got a connection in {after_release * 1000:.0f} ms")
    return result


# --------------------------------------------------------------------------- 4. vacuum (PostgreSQL)


VACUUM_VARIANTS = (
    # (name, isolation level of the idle session, what it did before going idle)
    ("REPEATABLE READ after a read", "REPEATABLE READ", "read"),
    ("READ COMMITTED after a write", "READ COMMITTED", "write"),
    ("READ COMMITTED after a read", "READ COMMITTED", "read"),
)


def vacuum_held_back(url: str, updates: int = 5_000) -> dict[str, Any]:
    """PostgreSQL keeps old row versions until no transaction can still see them. A session goes
    "idle in transaction" (REPEATABLE READ after a read; READ COMMITTED after a write; and, as
    the control, READ COMMITTED after a read). Another connection then makes `updates` row
    updates (each leaves a dead row version), and VACUUM runs on an AUTOCOMMIT connection
    (VACUUM cannot run in a transaction block). pg_stat_user_tables.n_dead_tup says how many dead
    rows VACUUM had to keep; the same again after the idle session ended. The updates set a
    column to its own value: they create dead rows without changing data.
    """
    backend = backend_of(url)
    if backend != "postgresql":
        return not_applicable(backend, "PostgreSQL only: VACUUM and pg_stat_activity.backend_xmin are "
                                       "PostgreSQL's (InnoDB purges old row versions from its undo log "
                                       "in the background; SQLite keeps old pages in its WAL: wal_growth)")
    with ExitStack() as stack:
        engine = stack.enter_context(lab_engine(url))
        maintenance = stack.enter_context(engine.connect().execution_options(isolation_level="AUTOCOMMIT"))
        notices = _capture_notices(maintenance)
        _, last_id = _row_ids(engine)
        visibility = _stats_visibility(maintenance)
        variants = [
            _vacuum_run(engine, maintenance, notices, name, level, action, last_id, updates)
            for name, level, action in VACUUM_VARIANTS
        ]
    finding = f"after {updates} row updates by another connection, VACUUM left " + "; ".join(
        f"{v['dead_rows_while_open']} dead rows while a session sat {v['state']} ({v['variant']}, "
        f"{_horizon(v)}) and {v['dead_rows_after_end']} once it ended" for v in variants)
    return {"applies": True, "backend": backend, "updates": updates, "visibility": visibility,
            "variants": variants, "finding": finding}


def _horizon(variant: dict[str, Any]) -> str:
    """What of the idle session pg_stat_activity shows that holds VACUUM back."""
    if variant["backend_xmin"] is not None:
        return f"backend_xmin {variant['backend_xmin']}"
    if variant["backend_xid"] is not None:
        return f"no backend_xmin but backend_xid {variant['backend_xid']}"
    return "neither backend_xmin nor backend_xid"


def _capture_notices(connection: Any) -> list[str]:
    """The server's INFO messages on this connection (VACUUM VERBOSE reports through them)."""
    received: list[str] = []
    connection.connection.driver_connection.add_notice_handler(
        lambda diagnostic: received.append(diagnostic.message_primary or ""))
    return received


def _stats_visibility(connection: Any) -> dict[str, Any]:
    """What a non-superuser lab role can see: its own sessions in full, others' hidden."""
    role = connection.execute(text(
        "SELECT rolsuper, pg_has_role(current_user, 'pg_read_all_stats', 'MEMBER') "
        "FROM pg_roles WHERE rolname = current_user")).one()
    own, others, hidden = connection.execute(text(
        "SELECT count(*) FILTER (WHERE usesysid = (SELECT oid FROM pg_roles WHERE rolname = current_user)),"
        " count(*) FILTER (WHERE usesysid IS DISTINCT FROM (SELECT oid FROM pg_roles WHERE rolname = current_user)),"
        " count(*) FILTER (WHERE query = '<insufficient privilege>') FROM pg_stat_activity")).one()
    return {"superuser": bool(role[0]), "pg_read_all_stats": bool(role[1]), "own_sessions_visible": int(own),
            "other_sessions": int(others), "other_sessions_hidden": int(hidden)}


def _vacuum_run(engine: Engine, maintenance: Any, notices: list[str], name: str, level: str, action: str,
                idle_row_id: int, updates: int) -> dict[str, Any]:
    _vacuum(maintenance, notices)  # start clean: earlier dead rows are removed
    with Session(engine.execution_options(isolation_level=level)) as idle:
        if action == "read":
            idle.execute(select(func.count()).select_from(Transaction))
        else:
            idle.execute(update(Transaction).where(Transaction.id == idle_row_id).values(label=Transaction.label))
        pid = idle.execute(text("SELECT pg_backend_pid()")).scalar_one()
        activity = maintenance.execute(text(
            "SELECT state, backend_xmin::text, backend_xid::text, age(backend_xmin), "
            "round(extract(epoch FROM now() - xact_start)::numeric, 3)::float "
            "FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).one()
        updated = _dead_row_updates(maintenance, idle_row_id, updates)
        while_open = _vacuum(maintenance, notices)
        idle.rollback()  # the idle transaction ends
    after_end = _vacuum(maintenance, notices)
    return {
        "variant": name,
        "isolation_level": level,
        "idle_session_did": action,
        "state": activity[0],
        "backend_xmin": activity[1],
        "backend_xid": activity[2],
        "backend_xmin_age": activity[3],
        "rows_updated": updated,
        "dead_rows_while_open": while_open["n_dead_tup"],
        "vacuum_report_while_open": while_open["report"],
        "dead_rows_after_end": after_end["n_dead_tup"],
        "vacuum_report_after_end": after_end["report"],
    }


def _dead_row_updates(connection: Any, skip_id: int, updates: int) -> int:
    """`updates` row updates in committed statements of at most 1,000 rows, leaving data as it was."""
    rows = connection.execute(select(func.count()).select_from(Transaction).where(Transaction.id != skip_id)).scalar_one()
    per_statement = min(rows, 1_000)
    done = 0
    for _ in range(math.ceil(updates / per_statement)):
        take = min(per_statement, updates - done)
        ids = select(Transaction.id).where(Transaction.id != skip_id).order_by(Transaction.id).limit(take)
        done += connection.execute(update(Transaction).where(Transaction.id.in_(ids.scalar_subquery()))
                                   .values(version=Transaction.version)).rowcount
    # Table statistics reach shared memory asynchronously: flush this backend's now.
    connection.execute(text("SELECT pg_stat_force_next_flush()"))
    return done


VACUUM_TUPLES = re.compile(r"tuples: (\d+) removed, (\d+) remain, (\d+) are dead but not yet removable")
VACUUM_CUTOFF = re.compile(r"(?:removable cutoff|oldest xmin): (\d+)")


def _vacuum(connection: Any, notices: list[str]) -> dict[str, Any]:
    """VACUUM the table; its own report (VACUUM VERBOSE) and n_dead_tup as the statistics say."""
    notices.clear()
    connection.execute(text("VACUUM (VERBOSE) transactions"))
    connection.execute(text("SELECT pg_stat_clear_snapshot()"))  # read fresh statistics, not a cached copy
    dead = connection.execute(text(
        "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'transactions'")).scalar_one()
    report: dict[str, Any] = {}
    for notice in notices:
        if "public.transactions" in notice and (tuples := VACUUM_TUPLES.search(notice)):
            removed, remain, kept = (int(n) for n in tuples.groups())
            cutoff = VACUUM_CUTOFF.search(notice)
            report = {"removed": removed, "remain": remain, "dead_not_yet_removable": kept,
                      "removable_cutoff_xid": cutoff.group(1) if cutoff else None}
            break
    return {"n_dead_tup": int(dead), "report": report}


# --------------------------------------------------------------------------- 5. WAL growth (SQLite)


def wal_growth(url: str, write_transactions: int = 60) -> dict[str, Any]:
    """In WAL mode a checkpoint copies committed pages from the -wal file into the database and
    the next writer starts the WAL over from its beginning, but only when no reader still uses
    the older pages. `write_transactions` transactions, each bumping the version of every row,
    once with no other connection open, once while a reader holds a
    snapshot taken before them. The -wal file size after each, and what a PASSIVE checkpoint
    managed then (frames in the WAL, frames copied). Uses lab.engine's recipe (real BEGIN, WAL)
    and SQLite's default automatic checkpoint."""
    backend = backend_of(url)
    if backend != "sqlite":
        return not_applicable(backend, "SQLite only: there a reader's old snapshot lives in the -wal file; "
                                       "PostgreSQL and MariaDB keep old row versions in the table or the undo "
                                       "log instead (vacuum_held_back)")
    wal = Path(f"{make_url(url).database}-wal")
    with ExitStack() as stack:
        engine = stack.enter_context(lab_engine(url))
        # Checkpoints and PRAGMAs run outside any transaction: on a raw driver connection, which
        # lab.engine's recipe leaves in autocommit (SQLAlchemy would BEGIN before them).
        control = engine.raw_connection()
        stack.callback(control.close)
        writer = stack.enter_context(engine.connect())
        settings = {name: _pragma(control, name)[0]
                    for name in ("journal_mode", "wal_autocheckpoint", "page_size", "synchronous")}
        _truncate_wal(control, wal)
        without = _write_and_measure(writer, control, wal, write_transactions)
        _truncate_wal(control, wal)
        reader = stack.enter_context(Session(engine))
        reader.execute(select(func.count()).select_from(Transaction))  # the snapshot is taken here
        with_reader = _write_and_measure(writer, control, wal, write_transactions)
        reader.close()  # the reader's transaction ends
        after_end = _truncate_wal(control, wal)
    result = {
        "applies": True,
        "backend": backend,
        "settings": settings,
        "write_transactions": write_transactions,
        "without_reader": without,
        "with_reader": with_reader,
        "after_reader_ended": after_end,
    }
    result["finding"] = (
        f"after {write_transactions} write transactions the -wal file was "
        f"{without['wal_bytes'] / 1e6:.1f} MB with no reader and {with_reader['wal_bytes'] / 1e6:.1f} MB while "
        f"a reader held an old snapshot (a checkpoint then copied {with_reader['checkpoint']['checkpointed_frames']}"
        f" of {with_reader['checkpoint']['wal_frames']} frames); once the reader ended a TRUNCATE checkpoint "
        f"left {after_end['wal_bytes']} bytes")
    return result


def _pragma(raw_connection: Any, statement: str) -> tuple[Any, ...]:
    cursor = raw_connection.cursor()
    try:
        return tuple(cursor.execute(f"PRAGMA {statement}").fetchone())
    finally:
        cursor.close()


def _truncate_wal(control: Any, wal: Path) -> dict[str, Any]:
    """Checkpoint everything and truncate the -wal file (works when no reader needs it)."""
    busy, frames, copied = _pragma(control, "wal_checkpoint(TRUNCATE)")
    return {"mode": "TRUNCATE", "busy": busy, "wal_frames": frames, "checkpointed_frames": copied,
            "wal_bytes": wal.stat().st_size if wal.exists() else 0}


def _write_and_measure(writer: Any, control: Any, wal: Path, transactions: int) -> dict[str, Any]:
    started = time.perf_counter()
    for _ in range(transactions):
        with writer.begin():
            # A real change: SQLite writes no page for an UPDATE that leaves its bytes as they were.
            writer.execute(update(Transaction).values(version=Transaction.version + 1))
    seconds = time.perf_counter() - started
    size_after_writes = wal.stat().st_size
    busy, frames, copied = _pragma(control, "wal_checkpoint(PASSIVE)")
    return {"wal_bytes": size_after_writes, "seconds": _seconds(seconds),
            "checkpoint": {"mode": "PASSIVE", "busy": busy, "wal_frames": frames, "checkpointed_frames": copied}}


# --------------------------------------------------------------------------- 6. session memory


MEMORY_VARIANTS = (
    # (name, one session for the whole job?, does the job keep the loaded objects?)
    ("one long session, job keeps the objects", True, True),
    ("one long session, job keeps only figures", True, False),
    ("a new session per batch, job keeps only figures", False, False),
)


def session_memory(url: str, batch_size: int = 200) -> dict[str, Any]:
    """A job reads every transaction in batches of `batch_size` (keyset order) and sums the
    versions. Variants: one long session whose job keeps the loaded objects in a list (as a job
    does that updates or reports them at the end); one long session whose job keeps only the
    figures (the identity map holds unmodified objects weakly, so they go once unreferenced);
    a new session per batch. tracemalloc gives the Python memory each variant allocated (peak,
    and still held at the end of the job with its session open); len(session.identity_map)
    the objects the session tracked at most."""
    backend = backend_of(url)
    with lab_engine(url) as engine:
        # Warm-up, not measured: the pooled connection, compiled SQL and mapper caches.
        with Session(engine) as warm_up:
            warm_up.scalars(select(Transaction).order_by(Transaction.id).limit(batch_size)).all()
        was_tracing = tracemalloc.is_tracing()
        if not was_tracing:
            tracemalloc.start()
        try:
            variants = [{"variant": name, **_load_job(engine, batch_size, long_session, keep)}
                        for name, long_session, keep in MEMORY_VARIANTS]
        finally:
            if not was_tracing:
                tracemalloc.stop()
    kept, fresh = variants[0], variants[2]
    finding = "; ".join(
        f"{v['variant']}: identity map up to {v['identity_map_max']} objects, "
        f"peak {v['peak_bytes'] / 1e6:.1f} MB, {v['held_bytes_at_end'] / 1e6:.1f} MB still held at the end"
        for v in variants
    ) + (f" (the long session that kept its objects peaked at {kept['peak_bytes'] / max(fresh['peak_bytes'], 1):.1f}x"
         f" a session per batch, for the same {kept['rows_loaded']} rows)")
    return {"applies": True, "backend": backend, "batch_size": batch_size, "variants": variants, "finding": finding}


def _load_job(engine: Engine, batch_size: int, long_session: bool, keep: bool) -> dict[str, Any]:
    gc.collect()
    baseline = tracemalloc.get_traced_memory()[0]
    tracemalloc.reset_peak()
    kept: list[Transaction] = []
    rows = version_sum = identity_max = 0
    last_id = 0
    with ExitStack() as stack:
        session = stack.enter_context(Session(engine)) if long_session else None
        while True:
            current = session if session is not None else Session(engine)
            try:
                batch = current.scalars(select(Transaction).where(Transaction.id > last_id)
                                        .order_by(Transaction.id).limit(batch_size)).all()
                identity_max = max(identity_max, len(current.identity_map))
            finally:
                if session is None:
                    current.close()
            if not batch:
                break
            rows += len(batch)
            version_sum += sum(t.version for t in batch)
            last_id = batch[-1].id
            if keep:
                kept.extend(batch)
            del batch
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - baseline  # the job is done; its session still open
        identity_at_end = len(session.identity_map) if session is not None else 0
    peak = tracemalloc.get_traced_memory()[1] - baseline
    return {"rows_loaded": rows, "version_sum": version_sum, "objects_kept_by_job": len(kept),
            "identity_map_max": identity_max, "identity_map_at_end": identity_at_end,
            "peak_bytes": peak, "held_bytes_at_end": held}


# --------------------------------------------------------------------------- all points, CLI


POINTS: dict[str, Callable[[str], dict[str, Any]]] = {
    "stale_snapshot": stale_snapshot,
    "row_lock_wait": row_lock_wait,
    "pool_exhaustion": pool_exhaustion,
    "vacuum_held_back": vacuum_held_back,
    "wal_growth": wal_growth,
    "session_memory": session_memory,
}


def run_all(url: str) -> dict[str, Any]:
    """Every point on this database, in order, with the server it ran on."""
    with lab_engine(url) as engine:
        server = server_version(engine)
    return {"backend": backend_of(url), "server": server, "points": {name: point(url) for name, point in POINTS.items()}}


def summary(result: dict[str, Any]) -> str:
    lines = [f"{result['server']}:"]
    for name, point in result["points"].items():
        lines.append(f"  {name}: {point['finding'] if point['applies'] else 'n/a - ' + point['reason']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab.long_operations", description=__doc__.split("\n")[0])
    parser.add_argument("--db", choices=[*databases.BACKENDS, "all"], default="sqlite")
    parser.add_argument("--rows", type=int, default=CLI_SEED_SIZE, help="transactions to seed")
    parser.add_argument("--json", action="store_true", help="print every figure as JSON, not just the findings")
    args = parser.parse_args(argv)
    backends = databases.BACKENDS if args.db == "all" else (args.db,)
    results = {}
    for backend in backends:
        sqlite_dir = Path(tempfile.mkdtemp(prefix="lab_longops_"))
        try:
            url = databases.private_database(backend, f"lab_longops_{os.getpid()}", sqlite_dir)
        except databases.BackendUnavailable as error:
            shutil.rmtree(sqlite_dir, ignore_errors=True)
            print(f"{backend}: {error}", file=sys.stderr)
            return 2
        try:
            with lab_engine(url) as engine:
                seed.create_schema(engine)
                seed.seed(engine, args.rows)
            results[backend] = run_all(url)
        finally:
            databases.drop_database(url)
            shutil.rmtree(sqlite_dir, ignore_errors=True)
        if not args.json:
            print(summary(results[backend]))
    if args.json:
        print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
