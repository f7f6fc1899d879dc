"""`StaleDoctor(app, db)` / `doctor.init_app(app, db)`: the extension a user adds in three lines.

    from stale_doctor import StaleDoctor
    doctor = StaleDoctor(app, db)   # db: Flask-SQLAlchemy's SQLAlchemy, a scoped_session or a sessionmaker

It listens to public SQLAlchemy events and Flask signals only, keeps no strong reference to a
session or an ORM object, and never breaks the app it watches.
"""

from __future__ import annotations

import importlib.metadata
from contextlib import contextmanager
from typing import Any, Iterator

from flask import Flask, Response, current_app, has_app_context
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from .config import ConfigError, load
from .findings import Finding, StaleDataFound
from .monitor import MONITOR, AppState
from .scopes import current

EXTENSION_KEY = "stale_doctor"
# The oldest release of each that the doctor supports (tested: tests/test_doctor_versions.py,
# oldest and newest); also declared in pyproject.toml.
OLDEST_SUPPORTED = {"SQLAlchemy": (1, 4), "Flask": (2, 2), "Flask-SQLAlchemy": (2, 5)}


def installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _release(version: str) -> tuple[int, ...]:
    parts = []
    for part in version.split(".")[:2]:
        digits = "".join(ch for ch in part if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(parts)


def _check_versions(db: Any) -> None:
    """Refuse, in one line, a version older than the doctor supports (Flask-SQLAlchemy only when used)."""
    used = ["SQLAlchemy", "Flask"] + (["Flask-SQLAlchemy"] if type(db).__module__.split(".")[0] == "flask_sqlalchemy"
                                      else [])
    for name in used:
        version = installed_version(name.lower())
        if version is not None and _release(version) < OLDEST_SUPPORTED[name]:
            supported = ", ".join(f"{n} >= {'.'.join(map(str, v))}" for n, v in OLDEST_SUPPORTED.items())
            raise RuntimeError(f"stale-doctor supports {supported}; this app has {name} {version}: upgrade it "
                               f"or leave the doctor out")


def _check_db(db: Any) -> None:
    if db is None:
        raise TypeError("StaleDoctor(app, db): db is required: Flask-SQLAlchemy's SQLAlchemy object, a "
                        "scoped_session, a sessionmaker, or a function returning the request's Session")
    flask_sqlalchemy = type(db).__module__.split(".")[0] == "flask_sqlalchemy"
    if not (flask_sqlalchemy or isinstance(db, (scoped_session, sessionmaker, Session)) or callable(db)):
        raise TypeError(f"StaleDoctor(app, db): cannot watch {type(db).__name__}: give Flask-SQLAlchemy's "
                        f"SQLAlchemy object, a scoped_session, a sessionmaker or a function returning a Session")


class StaleDoctor:
    def __init__(self, app: Flask | None = None, db: Any = None) -> None:
        self.db = db
        self._apps: list[Any] = []
        if app is not None:
            self.init_app(app, db)

    def init_app(self, app: Flask, db: Any = None) -> None:
        db = db if db is not None else self.db
        _check_db(db)
        _check_versions(db)
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(f"StaleDoctor is already installed on the app {app.import_name!r}: "
                               f"call StaleDoctor(app, db) or init_app once per app")
        settings = load(app.config, app.import_name)  # raises ConfigError naming the key
        app.extensions[EXTENSION_KEY] = AppState(app, settings, db)
        self.db = db
        self._apps.append(app)
        from .cli import command_group, probe_hooks

        app.cli.add_command(command_group)
        app.after_request(self._after_request)
        probe_hooks(app)
        if settings.enabled:
            MONITOR.acquire()
            MONITOR.default_settings = settings

    def _after_request(self, response: Response) -> Response:
        scope = current.get()
        if scope is not None and scope.pending_raise:
            found, scope.pending_raise = scope.pending_raise, []
            raise StaleDataFound(found)
        return response

    @contextmanager
    def job(self, name: str = "job") -> Iterator[None]:
        """Mark one unit of background work (a queue message, a CLI step) as a job of its own.

        Outside a request, a job's transaction must end with it; one left open is reported as
        background_app_context, as is one older than STALE_DOCTOR_JOB_MAX_SECONDS.
        """
        app = current_app._get_current_object() if has_app_context() else (self._apps[0] if self._apps else None)
        scope, token = MONITOR.push_job(app, name)
        try:
            yield
        finally:
            MONITOR.pop_job(scope, token)

    @property
    def findings(self) -> list[Finding]:
        """The findings kept in this process (every new one; in mode "collect", repeats too)."""
        return list(MONITOR.sink.collected)

    def clear(self) -> None:
        MONITOR.sink.collected.clear()
        MONITOR.sink.reset_counts()

    def close(self) -> None:
        """Stop watching (tests that build many apps): listeners go when the last doctor closes."""
        for app in self._apps:
            state = app.extensions.pop(EXTENSION_KEY, None)
            if state is not None and state.settings.enabled:
                MONITOR.release()
        self._apps.clear()


__all__ = ["StaleDoctor", "StaleDataFound", "ConfigError"]
