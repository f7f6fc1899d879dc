"""sqlite_file_replaced: a pooled SQLite connection reads a file that is no longer at its path.

A SQLite connection holds an open file, not a path: when a sync tool or a restore renames
another file over the database, the pool's connections keep reading the old inode. Each
connection's file (path, st_dev, st_ino) is recorded when the pool makes it, and compared with
the file at the path when the app starts using it (`engine_connect`, after the pool's checkout
and its listeners: an app that replaces such connections on checkout has done so by then, so
it gets no finding). One os.stat per checkout; the behaviour of the app is never changed.
"""

from __future__ import annotations

import os
import sqlite3
from typing import TYPE_CHECKING, Any

from .evidence import SERVER_ID_KEY

if TYPE_CHECKING:
    from .monitor import Monitor

FILE_KEY = "stale_doctor.sqlite_file"


def identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        return None
    return stat.st_dev, stat.st_ino


def on_pool_connect(m: "Monitor", dbapi: Any, record: Any) -> None:
    if not isinstance(dbapi, sqlite3.Connection):
        return
    # The file the connection opened, as SQLite names it (no transaction: a PRAGMA).
    rows = dbapi.execute("PRAGMA database_list").fetchall()
    path = next((row[2] for row in rows if row[1] == "main"), "")
    if path:  # "" for in-memory and temporary databases
        record.info[FILE_KEY] = (path, identity(path))


def on_engine_connect(m: "Monitor", conn: Any) -> None:
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
