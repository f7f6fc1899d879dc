"""Evidence gathered cheaply: the first frame in the user's code, the server connection id and
isolation level of a pooled connection (read once, when the pool makes the connection)."""

from __future__ import annotations

import os
import sys
from typing import Any

PID_KEY = "stale_doctor.pid"
SERVER_ID_KEY = "stale_doctor.server_id"
ISOLATION_KEY = "stale_doctor.isolation"

# Frames of these packages are never "your code".
_LIBRARY_ROOTS = ("stale_doctor", "sqlalchemy", "flask", "flask_sqlalchemy", "flask_caching", "werkzeug",
                  "jinja2", "blinker", "click", "gunicorn", "contextlib", "threading", "_pytest", "pluggy",
                  "importlib", "runpy", "socketserver", "concurrent", "asyncio")


def user_frame(packages: tuple[str, ...], depth_limit: int = 80) -> str | None:
    """`module:line in function` of the innermost frame in the user's packages, else of the
    innermost frame outside the libraries above; None if there is none (called from teardown)."""
    frame = sys._getframe(1)
    fallback = None
    depth = 0
    while frame is not None and depth < depth_limit:
        module = frame.f_globals.get("__name__", "")
        root = module.split(".")[0]
        if root in packages:
            return f"{module}:{frame.f_lineno} in {frame.f_code.co_name}"
        filename = frame.f_code.co_filename
        if fallback is None and root not in _LIBRARY_ROOTS and "site-packages" not in filename and "/bin/" not in filename:
            fallback = f"{module}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame = frame.f_back
        depth += 1
    return fallback


def describe_connection(dbapi_connection: Any, dialect: Any) -> tuple[str, str]:
    """(server connection id, isolation level) of a new DBAPI connection, one round trip at most.

    PostgreSQL: `pg_backend_pid()`; MariaDB/MySQL: `CONNECTION_ID()`; SQLite has no server: the
    process and handle. The driver opens a transaction for the SELECT; it is rolled back at
    once, so the app's first transaction on this connection starts clean.
    """
    name = dialect.name
    if name == "sqlite":
        return f"sqlite:{os.getpid()}:{id(dbapi_connection):x}", "SERIALIZABLE (SQLite: a snapshot per transaction)"
    query = {"postgresql": "SELECT pg_backend_pid()", "mysql": "SELECT CONNECTION_ID()",
             "mariadb": "SELECT CONNECTION_ID()"}.get(name)
    server_id = "?"
    isolation = str(getattr(dialect, "default_isolation_level", None) or "?")
    try:
        if query:
            cursor = dbapi_connection.cursor()
            cursor.execute(query)
            server_id = str(cursor.fetchone()[0])
            cursor.close()
        isolation = str(dialect.get_isolation_level(dbapi_connection))
    except Exception:  # a driver that refuses: the evidence says "?"
        pass
    finally:
        try:
            dbapi_connection.rollback()
        except Exception:
            pass
    return server_id, isolation


STALE_PRONE = ("REPEATABLE READ", "SERIALIZABLE")


def isolation_note(level: str | None) -> str:
    """Why an isolation level matters for a transaction that lasts."""
    if not level:
        return ""
    upper = level.upper()
    if "SQLITE" in upper:
        return "SQLite: every read of a transaction sees the snapshot taken at its first read"
    if any(upper.startswith(p) for p in STALE_PRONE):
        return f"{level}: every read of the transaction sees the snapshot taken at its first read (stale-prone)"
    return f"{level}: each statement sees the latest commits, but the open transaction holds its locks"
