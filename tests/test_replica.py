"""The replicas `make services` starts: a real streaming replica of the lab's PostgreSQL (a hot
standby) and of its MariaDB (GTID replication), each behind its primary by a fixed apply delay,
so that reading it right after a commit shows the old row every time, and waiting for the
commit's log position shows the new one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError

from lab import databases, replica


BACKENDS = ("postgresql", "mariadb")


def _required_or_skip(backend: str, error: Exception) -> None:
    if backend in databases.required_backends():
        pytest.fail(f"required backend unavailable: {error}", pytrace=False)
    pytest.skip(str(error))


@pytest.fixture(params=BACKENDS)
def primary_and_standby(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Engine, Engine, Engine]]:
    """(primary, replica, replica's lab_test) engines on a private database made on the primary."""
    backend = request.param
    try:
        url = databases.private_database(backend, f"lab_replica_{databases.owner_tag('main')}", tmp_path)
        standby_url = replica.replica_url(url)
    except databases.BackendUnavailable as error:
        _required_or_skip(backend, error)
    engines = [create_engine(url, isolation_level="AUTOCOMMIT"), create_engine(standby_url, isolation_level="AUTOCOMMIT"),
               create_engine(replica.replica_url(databases.server_url(backend).render_as_string(hide_password=False)),
                             isolation_level="AUTOCOMMIT")]
    try:
        with engines[2].connect() as watcher:
            try:
                watcher.execute(text("SELECT 1"))
            except DBAPIError as error:
                _required_or_skip(backend, databases.BackendUnavailable(f"the replica does not answer: {error.orig}"))
        yield engines[0], engines[1], engines[2]
    finally:
        for engine in engines:
            engine.dispose()
        databases.drop_database(url)


def test_the_replica_is_read_only_and_behind_by_its_apply_delay(primary_and_standby: tuple[Engine, Engine, Engine]) -> None:
    primary, standby, watcher_engine = primary_and_standby
    with primary.connect() as writer, watcher_engine.connect() as watcher:
        assert replica.is_replica(watcher) and not replica.is_replica(writer)
        delay = replica.apply_delay(watcher)
        writer.execute(text("CREATE TABLE setting (id int PRIMARY KEY, value text NOT NULL)"))
        writer.execute(text("INSERT INTO setting VALUES (1, 'old')"))
        replica.wait_for_replay(watcher, replica.primary_position(writer), timeout=10)  # the database and its row

        with standby.connect() as reader:
            assert reader.execute(text("SELECT value FROM setting WHERE id = 1")).scalar_one() == "old"
            with pytest.raises(DBAPIError, match="read-only"):
                reader.execute(text("UPDATE setting SET value = 'written on the standby' WHERE id = 1"))

            writer.execute(text("UPDATE setting SET value = 'new' WHERE id = 1"))  # committed (autocommit)
            committed_at = time.monotonic()
            position = replica.primary_position(writer)
            # Right after the commit: the standby still answers with the old row, and says so.
            assert reader.execute(text("SELECT value FROM setting WHERE id = 1")).scalar_one() == "old"
            assert not replica.replayed(watcher, position)
            with pytest.raises(replica.ReplicaBehind, match=position):
                replica.wait_for_replay(watcher, position, timeout=0.05)
            waited = replica.wait_for_replay(watcher, position, timeout=10)
            lag = time.monotonic() - committed_at
            assert reader.execute(text("SELECT value FROM setting WHERE id = 1")).scalar_one() == "new"
    print(f"apply delay {delay}: the commit was visible on the replica {lag:.3f} s after it (waited {waited:.3f} s)")
    configured = float(delay.removesuffix("ms")) / 1000 if delay.endswith("ms") else float(delay.removesuffix("s"))
    assert configured > 0, delay
    assert configured * 0.9 <= lag <= configured + 5, (lag, delay)


def test_replica_url_keeps_the_database_and_takes_the_replicas_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(replica.URL_VARIABLES["postgresql"], "postgresql+psycopg://lab:lab@127.0.0.1:5433/lab_test")
    monkeypatch.setenv(replica.URL_VARIABLES["mariadb"], "mysql+pymysql://lab:lab@127.0.0.1:3307/lab_test")
    assert replica.replica_url("postgresql+psycopg://lab:pw@127.0.0.1:5432/lab_scn_x") == (
        "postgresql+psycopg://lab:pw@127.0.0.1:5433/lab_scn_x")
    assert replica.replica_url("mysql+pymysql://lab:pw@127.0.0.1:3306/lab_scn_x") == (
        "mysql+pymysql://lab:pw@127.0.0.1:3307/lab_scn_x")
    with pytest.raises(ValueError, match="not sqlite"):
        replica.replica_url("sqlite:///var/lab.db")
    monkeypatch.delenv(replica.URL_VARIABLES["postgresql"])
    with pytest.raises(databases.BackendUnavailable, match="make services"):
        replica.replica_url("postgresql+psycopg://lab:pw@127.0.0.1:5432/lab_scn_x")
