"""The process-wide watcher: public SQLAlchemy events and Flask signals, listened to once.

Listeners are class-level (`Session`, `Engine`, `Pool`, `Mapper`), so a second engine, a
plain `Session()` made at import or a `scoped_session` of the user's own are all seen, and
Flask signals are received for every app; what an app's doctor does with a finding (log,
raise, collect, a JSONL file, the allowlist) is looked up per app. Every listener is guarded:
an error of the doctor's own is logged once and the app goes on.

The detectors live beside this module (sessions, transactions, objects, responses, replicas); this one
keeps the scopes (which request or job is running) and the emit path.
"""

from __future__ import annotations

import atexit
import datetime as dt
import functools
import logging
import os
import threading
from collections import deque
from typing import Any, Callable

import flask
from flask import signals
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.pool import Pool

from . import cookies, creation, datacache, files, forks, objects, replicas, responses, sessions, tasks, transactions
from .config import Settings
from .evidence import user_frame
from .findings import Finding, Sink
from .scopes import Scope, current, live_requests_skipped, push

log = logging.getLogger("stale_doctor")


class AppState:
    """What the doctor knows of one watched app: its settings and its session registries."""

    def __init__(self, app: flask.Flask, settings: Settings, db: Any = None) -> None:
        self.app_name = app.import_name
        self.settings = settings
        self.db = db
        self.registries = sessions.Registries(settings.app_packages, db)
        self.created = dt.datetime.now(dt.timezone.utc)  # a default's time older than this predates the app


class Monitor:
    def __init__(self) -> None:
        self.sink = Sink()
        self.default_settings = Settings()
        self.auto = False  # the pytest plugin watches apps that did not install the doctor
        self.auto_settings: Settings | None = None
        self._users = 0
        self._listeners: list[tuple[Any, str, Callable[..., Any]]] = []
        self._signal_receivers: list[tuple[Any, Callable[..., Any]]] = []
        self._restores: list[Callable[[], None]] = []  # what puts back a library method the doctor wraps (RQ's)
        self._failed: set[str] = set()
        self._lock = threading.Lock()
        self.reset_process_state()
        self.fork_parent: dict[str, Any] | None = None  # the forking process and its threads (forks.py)
        os.register_at_fork(before=self._before_fork, after_in_parent=self._after_fork_in_parent,
                            after_in_child=self._after_fork)
        atexit.register(self._at_exit)

    # ---- per-process state (forgotten in a forked child) ------------------------------

    def reset_process_state(self) -> None:
        self.open_transactions: dict[int, transactions.TxInfo] = {}
        self.last_sweep = 0.0  # when the open transactions' ages were last judged
        self.finished_loads: deque[objects.FinishedLoads] = deque(maxlen=256)
        self.endpoint_sql: dict[str, responses.EndpointStats] = {}
        self.read_by_every_request: frozenset[str] | None = None  # http_cache: the tables the app's hooks read
        self.table_commits: dict[str, float] = {}
        self.validators_issued: dict[tuple[str, str], tuple[float, list[str]]] = {}  # (endpoint, tag) -> when, tables
        self.primary_commits: dict[str, float] = {}  # table -> wall time before this process's last COMMIT to it
        self.primary_gtids: dict[str, tuple[str, float]] = {}  # MariaDB: table -> (its last commit's GTID, when read)
        self.global_cache_seen = False
        self.last_full_gc = 0.0
        self.holder_searches = 0
        self.serving_apps: set[int] = set()  # id() of the apps that began a request in this process
        self.creation_reads: dict[str, dict[str, Any]] = {}  # table -> where and when the app read it at creation
        self.default_values: dict[str, tuple[Any, Any]] = {}  # "table.column" -> (last default value, row identity)

    def _before_fork(self) -> None:
        if self.installed:
            self.guard(forks.before_fork)(self)

    def _at_exit(self) -> None:
        """A transaction still open when the interpreter exits (a worker's last job) is judged too."""
        if self.installed:
            self.guard(transactions.sweep_ages)(self, current.get())

    def _after_fork_in_parent(self) -> None:
        self.fork_parent = None

    def _after_fork(self) -> None:
        inherited = self.creation_reads  # a preloaded app's reads at creation are frozen in every child too
        self.reset_process_state()
        self.creation_reads = inherited
        self.sink.reset_after_fork()
        self._lock = threading.Lock()

    # ---- install / uninstall ----------------------------------------------------------

    def acquire(self) -> None:
        with self._lock:
            self._users += 1
            if self._users == 1:
                self._install()

    def release(self) -> None:
        with self._lock:
            self._users = max(0, self._users - 1)
            if self._users == 0:
                self._uninstall()

    @property
    def installed(self) -> bool:
        return bool(self._listeners)

    def _listen(self, target: Any, name: str, fn: Callable[..., Any], **kw: Any) -> None:
        guarded = self.guard(fn)
        if not event.contains(target, name, guarded):
            event.listen(target, name, guarded, **kw)
            self._listeners.append((target, name, guarded))

    def _install(self) -> None:
        t, s, o, r = transactions, sessions, objects, responses
        # engine_connect: SQLAlchemy 1.4 also passes `branch` (removed in 2.0), so each takes *_branch
        self._listen(Pool, "connect", lambda dbapi, record: t.on_pool_connect(self, record))
        self._listen(Pool, "checkout", lambda dbapi, record, proxy: t.on_checkout(self, record))
        self._listen(Pool, "checkin", lambda dbapi, record: t.on_checkin(self, record))
        self._listen(Engine, "engine_connect", lambda conn, *_branch: t.on_engine_connect(self, conn))
        self._listen(Pool, "connect", lambda dbapi, record: files.on_pool_connect(self, dbapi, record))
        self._listen(Engine, "engine_connect", lambda conn, *_branch: files.on_engine_connect(self, conn))
        self._listen(Engine, "begin", lambda conn: t.on_begin(self, conn))
        self._listen(Engine, "commit", lambda conn: t.on_end(self, conn, committed=True))
        self._listen(Engine, "rollback", lambda conn: t.on_end(self, conn, committed=False))
        self._listen(Engine, "before_cursor_execute", functools.partial(r.on_cursor_execute, self))
        self._listen(Engine, "engine_connect", lambda conn, *_branch: replicas.describe_recovery(conn))
        self._listen(Engine, "before_cursor_execute",
                     lambda conn, cursor, stmt, params, context, many: replicas.on_cursor_execute(self, conn, context))
        self._listen(Engine, "after_cursor_execute",
                     lambda conn, cursor, stmt, params, context, many: replicas.after_cursor_execute(self, conn, context))
        self._listen(Engine, "commit", lambda conn: replicas.on_commit(self, conn))
        self._listen(Pool, "checkin", lambda dbapi, record: replicas.on_checkin(self, dbapi, record))
        self._listen(Engine, "rollback", lambda conn: replicas.on_rollback(self, conn))
        self._listen(Session, "after_flush", lambda session, ctx: datacache.on_after_flush(self, session))
        self._listen(Session, "after_commit", lambda session: datacache.on_after_commit(self, session))  # before sessions'
        self._listen(Session, "after_rollback", lambda session: datacache.on_after_rollback(self, session))
        self._listen(Session, "do_orm_execute", lambda state: s.on_orm_execute(self, state))
        self._listen(Session, "after_begin", lambda session, trans, conn: s.on_after_begin(self, session, conn))
        self._listen(Session, "before_flush", lambda session, ctx, instances: s.on_before_flush(self, session))
        self._listen(Session, "after_flush", lambda session, ctx: s.on_after_flush(self, session))
        self._listen(Session, "after_commit", lambda session: s.on_after_commit(self, session))
        self._listen(Session, "after_rollback", lambda session: s.on_after_rollback(self, session))
        self._listen(Session, "do_orm_execute", lambda state: creation.on_orm_execute(self, state))
        self._listen(Session, "before_flush", lambda session, ctx, instances: creation.on_before_flush(self, session))
        self._listen(Session, "after_flush", lambda session, ctx: creation.on_after_flush(self, session))
        self._listen(Session, "after_transaction_end", lambda session, trans: s.on_transaction_end(self, session, trans))
        on_load_row = datacache.load_listener(self)  # the rows each request loads: it guards itself
        for name in ("load", "refresh"):
            event.listen(Mapper, name, on_load_row, raw=True)
            self._listeners.append((Mapper, name, on_load_row))
        on_load = o.load_listener(self)  # once per loaded row: it guards itself
        for name in ("load", "refresh"):
            event.listen(Mapper, name, on_load, raw=True)
            self._listeners.append((Mapper, name, on_load))
        on_load_text = cookies.load_listener(self)  # the text values a request loaded, for its cookie session
        for name in ("load", "refresh"):
            event.listen(Mapper, name, on_load_text, raw=True)
            self._listeners.append((Mapper, name, on_load_text))
        for signal, receiver in (
            (signals.appcontext_pushed, self._appcontext_pushed),
            (signals.appcontext_popped, self._appcontext_popped),
            (signals.request_started, self._request_started),
            (signals.request_finished, self._request_finished),
            (signals.request_tearing_down, self._request_tearing_down),
            (signals.got_request_exception, self._got_request_exception),
            (signals.before_render_template, self._before_render_template),
        ):
            guarded = self.guard(receiver)
            signal.connect(guarded, weak=False)
            self._signal_receivers.append((signal, guarded))
        for signal in tasks.publish_signals():  # Celery's, when it is installed
            guarded = self.guard(tasks.receiver(self))
            signal.connect(guarded, weak=False)
            self._signal_receivers.append((signal, guarded))
        self._restores.extend(tasks.wrap_rq_queues(self))  # RQ has no publish signal: its enqueue is wrapped

    def _uninstall(self) -> None:
        for target, name, fn in self._listeners:
            if event.contains(target, name, fn):
                event.remove(target, name, fn)
        self._listeners.clear()
        for signal, receiver in self._signal_receivers:
            signal.disconnect(receiver)
        self._signal_receivers.clear()
        for restore in reversed(self._restores):
            restore()
        self._restores.clear()
        self.reset_process_state()
        self.sink.reset_counts()  # a doctor installed later reports its findings afresh

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Run `fn`; on an error of the doctor's own, log it once per listener and go on."""

        @functools.wraps(fn)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception:
                self.internal_error(getattr(fn, "__qualname__", repr(fn)))
                return None

        return guarded

    def internal_error(self, name: str) -> None:
        """Log the current exception once per listener: the app goes on, the check is skipped."""
        if name not in self._failed:
            self._failed.add(name)
            log.exception("stale-doctor: internal error in %s; the app goes on, the doctor skips this check", name)

    # ---- which app, which settings ------------------------------------------------------

    def state_for(self, app: Any) -> AppState | None:
        if app is None:
            return None
        state = app.extensions.get("stale_doctor")
        if isinstance(state, AppState):
            return state if state.settings.enabled else None
        if state is None and self.auto and self.auto_settings is not None:
            from .config import load

            settings = load(app.config, app.import_name)
            settings = Settings(**{**settings.__dict__, "mode": self.auto_settings.mode,
                                   "file": settings.file or self.auto_settings.file})
            app.extensions["stale_doctor"] = state = AppState(app, settings)
            return state
        return None

    def settings_for(self, scope: Scope | None) -> Settings | None:
        if scope is not None:
            state = self.state_for(scope.app())
            return state.settings if state else None
        if self.auto and self.auto_settings is not None:
            return self.auto_settings
        return self.default_settings if self._users else None

    def watched(self) -> Scope | None:
        """The running scope, if its app is watched (else None: the doctor stays quiet)."""
        scope = current.get()
        if scope is None or self.state_for(scope.app()) is None:
            return None
        return scope

    # ---- findings -------------------------------------------------------------------------

    def emit(self, cause: str, proof: str, subject: str, scope: Scope | None, *, models: tuple[str, ...] = (),
             location: str | None = None, **evidence: Any) -> Finding | None:
        settings = self.settings_for(scope)
        if settings is None:
            return None
        if location is None:
            location = user_frame(settings.app_packages)
        data: dict[str, Any] = {"pid": os.getpid(), "thread": threading.current_thread().name}
        if scope is not None:
            data["request" if scope.kind == "request" else "job"] = scope.summary()
        if location:
            data["location"] = location
        data.update({k: v for k, v in evidence.items() if v is not None})
        finding = Finding(cause, proof, data, subject, models=models)
        if self.sink.emit(finding, settings) and settings.mode == "raise" and scope is not None:
            scope.pending_raise.append(finding)
        return finding

    # ---- scopes from Flask's signals ----------------------------------------------------

    def _appcontext_pushed(self, app: flask.Flask, **_: Any) -> None:
        push(Scope("job", app, f"app context of {app.import_name}", placeholder=True))

    def _appcontext_popped(self, app: flask.Flask, **_: Any) -> None:
        scope = current.get()
        while scope is not None and scope.kind == "request":
            self._finish(scope)
            scope = scope.previous
        if scope is not None and scope.placeholder:
            self._finish(scope)
            scope = scope.previous
        current.set(scope)

    def _finish(self, scope: Scope) -> None:
        scope.ended = True
        if scope.kind == "request":
            objects.remember_finished(self, scope)
        else:
            transactions.check_job_end(self, scope)

    def _request_started(self, app: flask.Flask, **_: Any) -> None:
        base = live_requests_skipped(current.get())
        req = flask.request
        scope = Scope("request", app, f"{req.method} {req.path}", method=req.method, path=req.full_path.rstrip("?"),
                      endpoint=req.endpoint)
        scope.previous = base
        if base is not None and base.placeholder and base.app() is app:
            base.requests_served += 1
        current.set(scope)
        state = self.state_for(app)
        if state is None:
            return
        creation.note_request(self, app)
        datacache.wrap_caches(self, app)  # Flask-Caching's backends, once each
        objects.sweep_survivors(self, scope)
        transactions.sweep_ages(self, scope)
        sessions.check_leftovers(self, state, scope)

    def _request_finished(self, app: flask.Flask, response: Any, **_: Any) -> None:
        scope = self.watched()
        if scope is None or scope.kind != "request":
            return
        scope.status = response.status_code
        responses.check_response(self, scope, response)
        if self.fork_parent is not None:
            state = self.state_for(app)
            if state is not None:
                forks.check_first_request(self, state.settings.app_packages)
        cookies.check_session(self, scope)

    def _request_tearing_down(self, app: flask.Flask, exc: BaseException | None = None, **_: Any) -> None:
        scope = self.watched()
        if scope is None or scope.kind != "request":
            return
        sessions.check_pending(self, scope)
        datacache.request_ended(self, scope)
        scope.loaded_states.clear()  # the copies of the request's loaded rows: not kept beyond it
        scope.ended = True

    def _got_request_exception(self, app: flask.Flask, exception: BaseException, **_: Any) -> None:
        scope = self.watched()
        if scope is not None:
            objects.check_exception(self, scope, exception)

    def _before_render_template(self, app: flask.Flask, template: Any, context: dict[str, Any], **_: Any) -> None:
        scope = self.watched()
        if scope is not None and scope.kind == "request":
            objects.check_values(self, scope, context.values(), f"the template {template.name}")

    # ---- jobs -----------------------------------------------------------------------------

    def push_job(self, app: Any, name: str) -> tuple[Scope, Any]:
        scope = Scope("job", app, name)
        return scope, push(scope)

    def pop_job(self, scope: Scope, token: Any) -> None:
        """End a `doctor.job()`: its checks run guarded, and the scope below it is restored always."""
        try:
            self.guard(self._finish)(scope)
        finally:
            current.reset(token)


MONITOR = Monitor()
