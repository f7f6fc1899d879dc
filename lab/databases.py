"""Which backends this run can use, and a private database on each for a test worker or run.

Backends come from environment variables (named in the README):
- SQLite is always there (a file per use);
- PostgreSQL from `LAB_TEST_POSTGRESQL_URL`, MariaDB from `LAB_TEST_MARIADB_URL`;
- `LAB_REQUIRE_BACKENDS=all` turns a missing or unreachable server into an error.
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy import Connection, create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import OperationalError

BACKENDS = ("sqlite", "postgresql", "mariadb")
URL_VARIABLES = {"postgresql": "LAB_TEST_POSTGRESQL_URL", "mariadb": "LAB_TEST_MARIADB_URL"}


class BackendUnavailable(RuntimeError):
    """A server backend was asked for and cannot be used; the message says how to fix it."""


def required_backends() -> set[str]:
    value = os.environ.get("LAB_REQUIRE_BACKENDS", "").strip().lower()
    if value == "all":
        return set(BACKENDS)
    return {name.strip() for name in value.split(",") if name.strip()}


def server_url(backend: str) -> URL:
    """The configured URL of a server backend; raises BackendUnavailable when there is none."""
    variable = URL_VARIABLES[backend]
    raw = os.environ.get(variable)
    if not raw:
        raise BackendUnavailable(
            f"{backend}: {variable} is not set; run `make services` and export the URL it prints"
        )
    return make_url(raw)


def owner_tag(default: str) -> str:
    """Who owns a private database: the pytest-xdist worker (or `default`), prefixed by
    LAB_DB_NAMESPACE when set, so that two checkouts testing at once on the same servers
    never drop each other's databases."""
    worker = os.environ.get("PYTEST_XDIST_WORKER") or default
    return f"{os.environ.get('LAB_DB_NAMESPACE', '')}{worker}"


def private_database(backend: str, name: str, sqlite_dir: Path) -> str:
    """Create (or re-create, empty) a database called `name` and return its URL.

    SQLite: a new file in `sqlite_dir`. Servers: a database next to the configured one,
    created through the configured login (which needs the right to create databases).
    """
    if backend == "sqlite":
        path = sqlite_dir / f"{name}.sqlite3"
        for leftover in sqlite_dir.glob(f"{name}.sqlite3*"):
            leftover.unlink()
        return f"sqlite:///{path}"
    url = server_url(backend)
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=False)
    try:
        with admin.connect() as connection:
            if backend == "postgresql":
                connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                connection.execute(text(f'CREATE DATABASE "{name}"'))
            else:
                kill_sessions(connection, name)
                connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
                connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except OperationalError as error:
        raise BackendUnavailable(
            f"{backend}: cannot reach {url.render_as_string(hide_password=True)} "
            f"({error.orig}); run `make services`"
        ) from None
    finally:
        admin.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


def drop_database(url: str) -> None:
    """Drop a database made by private_database (a SQLite file is simply deleted)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        for leftover in Path(parsed.database or "").parent.glob(Path(parsed.database or "").name + "*"):
            leftover.unlink()
        return
    backend = "postgresql" if parsed.get_backend_name() == "postgresql" else "mariadb"
    admin = create_engine(server_url(backend), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            if backend == "postgresql":
                connection.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
            else:
                kill_sessions(connection, parsed.database or "")
                connection.execute(text(f"DROP DATABASE IF EXISTS `{parsed.database}`"))
    finally:
        admin.dispose()


def kill_sessions(connection: Connection, database: str) -> None:
    """End every other server session using `database` (MariaDB has no DROP ... FORCE).

    A broken variant leaves transactions open on purpose; their metadata locks would make
    DROP DATABASE or DROP TABLE wait for them forever.
    """
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :db AND pid <> pg_backend_pid()"),
            {"db": database},
        )
        return
    session_ids = connection.execute(
        text("SELECT id FROM information_schema.processlist WHERE db = :db AND id <> CONNECTION_ID()"),
        {"db": database},
    ).scalars().all()
    for session_id in session_ids:
        try:
            connection.execute(text(f"KILL {int(session_id)}"))
        except OperationalError:  # it ended on its own meanwhile
            pass
