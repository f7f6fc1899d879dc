"""The SQLite engine follows its file: a file replaced on disk is reopened, a deleted one is an error.

configure_engine (lab/engine.py) compares each pooled connection's file identity with the file
at the path on checkout. Both sides are asserted: with `watch_file=False` (what
broken/sqlite_file_replaced.py does) the pool keeps reading the replaced file.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from lab.engine import FILE_IDENTITY_KEY, DatabaseFileMissing, configure_engine, engine_options, file_identity


def make(path: Path, watch_file: bool = True) -> Engine:
    url = f"sqlite:///{path}"
    engine = configure_engine(create_engine(url, **engine_options(url)), watch_file=watch_file)
    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (v TEXT)")
        connection.exec_driver_sql("INSERT INTO t VALUES ('old')")
    with engine.connect() as connection:  # the old file's WAL emptied, as before any safe replacement
        assert connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").one()[0] == 0
    return engine


def replace(path: Path, value: str) -> None:
    """A copy with one change, renamed over the database (what a sync tool or a restore does)."""
    temporary = path.with_name(path.name + ".syncing")
    live, copy = sqlite3.connect(path), sqlite3.connect(temporary)
    live.backup(copy)
    live.close()
    copy.execute("UPDATE t SET v = ?", (value,))
    copy.execute("INSERT INTO t VALUES ('only in the copy')")
    copy.commit()
    copy.close()
    os.replace(temporary, path)


def value(engine: Engine) -> str:
    with engine.connect() as connection:
        return str(connection.exec_driver_sql("SELECT v FROM t WHERE rowid = 1").scalar_one())


@pytest.mark.parametrize("watch_file", [True, False])
def test_a_replaced_file_is_reopened_unless_the_watch_is_off(tmp_path: Path, watch_file: bool) -> None:
    path = tmp_path / "db.sqlite3"
    engine = make(path, watch_file)
    try:
        assert value(engine) == "old"
        assert engine.pool.checkedin() == 1  # the pool holds a connection to the old file
        replace(path, "new")
        assert value(engine) == ("new" if watch_file else "old")
        with engine.begin() as connection:  # and writes land in the file at the path
            connection.exec_driver_sql("UPDATE t SET v = 'written after' WHERE rowid = 1")
    finally:
        engine.dispose()
    check = sqlite3.connect(path)
    rows = [row[0] for row in check.execute("SELECT v FROM t ORDER BY rowid")]
    check.close()
    if watch_file:
        assert rows == ["written after", "only in the copy"]
    else:
        # The old connection's write went to the -wal beside the path (the old file's, now shared
        # with the new one) as a page of the OLD file; the new file reads that page as its own:
        # the copy's row is gone. A replaced file written through old connections is corrupted.
        assert rows == ["written after"]


def test_every_connection_the_pool_held_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    engine = make(path)
    try:
        first, second = engine.connect(), engine.connect()  # two pooled connections to the old file
        first.close()
        second.close()
        replace(path, "new")
        one, two = engine.connect(), engine.connect()
        assert [c.exec_driver_sql("SELECT count(*) FROM t").scalar_one() for c in (one, two)] == [2, 2]
        one.close()
        two.close()
    finally:
        engine.dispose()


def test_a_deleted_file_is_a_clear_error_not_a_new_empty_database(tmp_path: Path) -> None:
    path = tmp_path / "db.sqlite3"
    engine = make(path)
    try:
        assert value(engine) == "old"
        for leftover in tmp_path.glob("db.sqlite3*"):
            leftover.unlink()
        with pytest.raises(DatabaseFileMissing, match=f"{path} was deleted"):
            engine.connect()
        assert not path.exists()  # nothing created in its place
        # The file deleted and made again (a scenario recreating its database): reopened.
        fresh = sqlite3.connect(path)
        fresh.execute("CREATE TABLE t (v TEXT)")
        fresh.execute("INSERT INTO t VALUES ('recreated')")
        fresh.commit()
        fresh.close()
        assert value(engine) == "recreated"
    finally:
        engine.dispose()


def test_a_new_database_file_is_still_created_on_first_connect(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    url = f"sqlite:///{path}"
    engine = configure_engine(create_engine(url, **engine_options(url)))
    try:
        with engine.connect() as connection:
            assert connection.exec_driver_sql("SELECT 1").scalar_one() == 1
        assert path.exists()
        with engine.connect() as connection:  # the identity recorded at connect is the new file's
            assert connection.connection.info[FILE_IDENTITY_KEY] == file_identity(str(path)) is not None
    finally:
        engine.dispose()
