"""sqlite_file_replaced: a pooled SQLite connection reads a file that is no longer at its path.

A SQLite connection holds an open file, not a path: when a sync tool or a restore renames
another file over the database, the pool's connections keep reading the old inode. Each
connection's file (path, st_dev, st_ino) is recorded when the pool makes it, and compared with
the file at the path when the app starts using it (`engine_connect`, after the pool's checkout
and its listeners: an app that replaces such connections on checkout has done so by then, so
it gets no finding), and, for a connection that is never checked in (a module-global Session
holding its transaction open across requests), at its first statement in each request (outside
requests, at most once a second). One os.stat per checkout and per request on a connection; the
behaviour of the app is never changed.
"""

from __future__ import annotations

import os
import sqlite3
import time
from typing import TYPE_CHECKING, Any

from .evidence import SERVER_ID_KEY

if TYPE_CHECKING:
    from .monitor import Monitor

FILE_KEY = "stale_doctor.sqlite_file"
CHECKED_KEY = "stale_doctor.sqlite_file_checked"  # when the connection was last checked: see `_when`


def identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def on_pool_connect(m: "Monitor", dbapi: Any, record: Any) -> None:
    if isinstance(dbapi, sqlite3.Connection):
        record.info[FILE_KEY] = opened_file(dbapi)


def opened_file(dbapi: sqlite3.Connection) -> tuple[str, tuple[int, int] | None]:
    """The file the connection opened, as SQLite names it (a PRAGMA: no transaction), and its identity
    now; ("", None) for in-memory and temporary databases."""
    rows = dbapi.execute("PRAGMA database_list").fetchall()
    path = next((row[2] for row in rows if row[1] == "main"), "")
    return (path, identity(path)) if path else ("", None)


def on_engine_connect(m: "Monitor", conn: Any) -> None:
    if FILE_KEY in conn.info:
        check(m, conn)


def _when(m: "Monitor") -> int:
    """The request the statement runs in (its serial), or outside requests the second it runs in:
    a connection held across requests is checked once per request, and at most once a second."""
    scope = m.watched()
    return scope.serial if scope is not None else -int(time.monotonic())


def on_statement(m: "Monitor", conn: Any) -> None:
    """A statement on a SQLite connection: checked at its first statement of each request. A
    connection the pool made before the doctor was installed is recorded, as it is now, at its first."""
    info = conn.info
    if FILE_KEY not in info:
        if conn.dialect.name != "sqlite":
            return
        dbapi = conn.connection.dbapi_connection
        info[FILE_KEY] = opened_file(dbapi) if isinstance(dbapi, sqlite3.Connection) else ("", None)
        info[CHECKED_KEY] = _when(m)
    elif info.get(CHECKED_KEY) != _when(m):
        check(m, conn)


def check(m: "Monitor", conn: Any) -> None:
    conn.info[CHECKED_KEY] = _when(m)
    opened = conn.info.get(FILE_KEY)
    if not opened or opened[1] is None:
        return
    path, held = opened
    now = identity(path)
    if now == held:
        return
    at_path = f"inode {now[1]}" if now else "no file"
    server_id = conn.info.get(SERVER_ID_KEY, "?")
    m.emit("sqlite_file_replaced",
           f"pooled connection {server_id} reads inode {held[1]} of {path}, but the path now holds {at_path}: "
           "the file was replaced (or deleted) under the pool, so this connection serves the old file's rows",
           f"{path}:{held[1]}->{now[1] if now else 'none'}", m.watched(),
           path=path, connection_inode=held[1], path_inode=now[1] if now else None, server_connection_id=server_id)
