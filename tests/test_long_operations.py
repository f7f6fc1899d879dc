"""The long_operations measurements show, on every backend, the harm each one is about.

Each point is asserted in both directions where it has two: the long transaction, session or
reader shows the harm, and ending it (or the control case) does not. Timings are asserted as
lower bounds only (a wait of at least the configured timeout); upper bounds would measure the
machine, not the lab.

Each backend gets a database of its own (not the shared `db_url` one): these measurements
change rows, vacuum the table and hold locks.
"""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest

from lab import databases, long_operations, seed

ROWS = 1_000
BATCH = 100


@pytest.fixture(scope="module")
def longops_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A seeded database of this backend, private to this module and xdist worker."""
    name = f"lab_longops_test_{databases.owner_tag('main')}"
    try:
        url = databases.private_database(backend, name, tmp_path_factory.mktemp(f"longops_{backend}"))
    except databases.BackendUnavailable as error:
        if backend in databases.required_backends():
            pytest.fail(f"required backend unavailable: {error}", pytrace=False)
        pytest.skip(str(error))
    try:
        with long_operations.lab_engine(url) as engine:
            seed.create_schema(engine)
            seed.seed(engine, ROWS)
        yield url
    finally:
        databases.drop_database(url)


def _plain(result: dict[str, Any]) -> dict[str, Any]:
    """The result survives a JSON round trip unchanged (what the notebook stores and prints)."""
    assert json.loads(json.dumps(result)) == result
    assert result["backend"] in databases.BACKENDS
    if result["applies"]:
        assert isinstance(result["finding"], str) and result["finding"] and "\n" not in result["finding"]
    else:
        assert result["reason"] and "finding" not in result
    return result


def test_stale_snapshot(backend: str, longops_url: str) -> None:
    result = _plain(long_operations.stale_snapshot(longops_url, commits=3, interval_s=0.05))
    runs = {run["isolation_level"]: run for run in result["runs"]}
    default = next(run for run in result["runs"] if run["default_level"])
    expected_default = {"sqlite": "SERIALIZABLE", "postgresql": "READ COMMITTED", "mariadb": "REPEATABLE READ"}
    assert default["isolation_level"] == expected_default[backend]
    snapshot_runs = [runs["REPEATABLE READ"]] if backend == "postgresql" else [default]
    for run in snapshot_runs:  # the snapshot taken at the first read is kept while others commit
        assert [r["seen_version"] for r in run["reads"]] == [run["version_at_first_read"]] * 3
        assert run["stale_reads"] == 3 and run["commits_not_seen_at_last_read"] == 3
        assert run["stale_until_transaction_ended"] and run["seconds_stale"] > 0
    if backend == "postgresql":  # READ COMMITTED re-reads committed rows at every statement
        assert default["stale_reads"] == 0 and default["seconds_stale"] == 0.0
        assert all(r["seen_version"] == r["committed_version"] for r in default["reads"])
    for run in result["runs"]:  # ending the transaction ends the staleness
        assert run["fresh_after_transaction_ended"]
        assert run["version_after_transaction_ended"] == run["reads"][-1]["committed_version"]


EXPECTED_LOCK_ERRORS = {
    "sqlite": ("sqlite3.OperationalError", "database is locked"),
    "postgresql": ("psycopg.errors.LockNotAvailable", "lock timeout"),
    "mariadb": ("pymysql.err.OperationalError", "1205"),
}


def test_row_lock_wait(backend: str, longops_url: str) -> None:
    result = _plain(long_operations.row_lock_wait(longops_url, timeout_s=1))
    same, other, after = result["same_row"], result["other_row"], result["same_row_after_long_operation_ended"]
    driver_class, text = EXPECTED_LOCK_ERRORS[backend]
    assert same["configured_timeout_s"] == 1.0
    assert same["outcome"] == "error" and same["error_class"] == "sqlalchemy.exc.OperationalError"
    assert same["driver_error_class"] == driver_class and text in same["message"]
    assert same["waited_s"] >= 0.9  # it waited for the lock, it was not refused at once
    if backend == "sqlite":  # one write lock for the whole database
        assert other["outcome"] == "error" and result["lock_scope"] == "database"
    else:
        assert other["outcome"] == "updated" and result["lock_scope"] == "row"
        assert other["waited_s"] < same["waited_s"]
    assert after["outcome"] == "updated" and after["waited_s"] < same["waited_s"]


def test_pool_exhaustion(backend: str, longops_url: str) -> None:
    result = _plain(long_operations.pool_exhaustion(longops_url, pool_size=2, pool_timeout=1.0))
    request = result["request"]
    assert result["pool_class"] == "QueuePool"
    assert request["outcome"] == "error" and request["error_class"] == "sqlalchemy.exc.TimeoutError"
    assert request["message"].startswith("QueuePool limit of size 2 overflow 0 reached, connection timed out")
    assert request["waited_s"] >= 0.99  # the pool waited its timeout (measured to the millisecond)
    assert "Checked out connections: 2" in result["pool_status_when_full"]
    assert result["request_after_one_session_ended"]["waited_s"] < request["waited_s"]


def test_vacuum_held_back(backend: str, longops_url: str) -> None:
    result = _plain(long_operations.vacuum_held_back(longops_url, updates=2_000))
    if backend != "postgresql":
        assert result["applies"] is False
        return
    assert result["visibility"]["own_sessions_visible"] >= 1
    variants = {v["variant"]: v for v in result["variants"]}
    repeatable, written, control = (variants[name] for name, _, _ in long_operations.VACUUM_VARIANTS)
    for variant in (repeatable, written, control):
        assert variant["state"] == "idle in transaction" and variant["rows_updated"] == 2_000
        assert variant["dead_rows_after_end"] == 0
    for variant in (repeatable, written):  # the idle transaction keeps every dead row alive
        assert variant["dead_rows_while_open"] == variant["rows_updated"]
        assert variant["vacuum_report_while_open"]["dead_not_yet_removable"] == variant["rows_updated"]
        assert variant["vacuum_report_after_end"]["removed"] >= variant["rows_updated"]
    # What holds them: REPEATABLE READ's snapshot (backend_xmin), a writer's own transaction id.
    assert repeatable["backend_xmin"] is not None
    assert repeatable["vacuum_report_while_open"]["removable_cutoff_xid"] == repeatable["backend_xmin"]
    assert written["backend_xmin"] is None and written["backend_xid"] is not None
    assert written["vacuum_report_while_open"]["removable_cutoff_xid"] == written["backend_xid"]
    # READ COMMITTED between statements, having only read, holds nothing.
    assert control["backend_xmin"] is None and control["backend_xid"] is None
    assert control["dead_rows_while_open"] == 0


def test_wal_growth(backend: str, longops_url: str) -> None:
    result = _plain(long_operations.wal_growth(longops_url, write_transactions=80))
    if backend != "sqlite":
        assert result["applies"] is False
        return
    assert result["settings"]["journal_mode"] == "wal"
    without, with_reader = result["without_reader"], result["with_reader"]
    # Without a reader, checkpoints reset the WAL: it stays near the autocheckpoint size.
    assert without["checkpoint"]["checkpointed_frames"] == without["checkpoint"]["wal_frames"]
    assert with_reader["wal_bytes"] > 2 * without["wal_bytes"] > 0
    # With the reader, a checkpoint cannot copy the frames the reader's snapshot predates.
    assert with_reader["checkpoint"]["checkpointed_frames"] < with_reader["checkpoint"]["wal_frames"]
    assert result["after_reader_ended"]["busy"] == 0 and result["after_reader_ended"]["wal_bytes"] == 0


def test_session_memory(backend: str, longops_url: str) -> None:
    result = _plain(long_operations.session_memory(longops_url, batch_size=BATCH))
    variants = {v["variant"]: v for v in result["variants"]}
    kept, figures_only, per_batch = (variants[name] for name, _, _ in long_operations.MEMORY_VARIANTS)
    for variant in (kept, figures_only, per_batch):  # the same work: every row, the same sum
        assert variant["rows_loaded"] == ROWS and variant["version_sum"] == kept["version_sum"]
    assert kept["identity_map_max"] == kept["identity_map_at_end"] == ROWS
    # Unreferenced, unmodified objects leave the identity map (it holds them weakly).
    assert figures_only["identity_map_max"] == per_batch["identity_map_max"] == BATCH
    assert figures_only["identity_map_at_end"] == 0
    assert kept["peak_bytes"] > 3 * per_batch["peak_bytes"]
    assert kept["held_bytes_at_end"] > 10 * max(per_batch["held_bytes_at_end"], figures_only["held_bytes_at_end"])


def test_summary_prints_findings_and_reasons() -> None:
    fake = {"server": "SQLite 3", "points": {
        "a": {"applies": True, "finding": "it stayed stale"},
        "b": {"applies": False, "reason": "PostgreSQL only"}}}
    assert long_operations.summary(fake).splitlines() == [
        "SQLite 3:", "  a: it stayed stale", "  b: n/a - PostgreSQL only"]


def test_a_failed_measurement_releases_its_locks(backend: str, longops_url: str,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """The long transaction is rolled back and its connection closed even when the measurement fails."""
    timed_update = long_operations._timed_update

    def fail(*_args: Any) -> dict[str, Any]:
        raise RuntimeError("measurement failed")

    monkeypatch.setattr(long_operations, "_timed_update", fail)
    with pytest.raises(RuntimeError, match="measurement failed"):
        long_operations.row_lock_wait(longops_url)
    with long_operations.lab_engine(longops_url) as engine:
        locked_id = long_operations._row_ids(engine)[0]
        assert timed_update(engine, locked_id, 1)["outcome"] == "updated"
