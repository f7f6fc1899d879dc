"""Causes injected into a real app at run time, each the way users write it, never by editing files.

Each injection changes the running app through public seams (a view function wrapped in
`app.view_functions`, a hook added with `app.after_request`, a session registry swapped on the
app's own `scoped_session`, a SQLAlchemy method patched for one step) and returns the steps that
show it, built from the driver's own `read_step` / `write_step`. The code an injection adds to
the app runs as a module of the app's package (`<package>.field_injection`, made at run time):
to the doctor it is the app's own code, as the bug would be in a real report.

An injection is found when the doctor reports its cause; the same flow without the injection
is the clean flow, whose findings are judged in the precision table.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import threading
import time
import types
from dataclasses import dataclass, field
from typing import Any, Callable

from flask import Flask, Response, request, session
from sqlalchemy import create_engine, event, inspect, text
from sqlalchemy.orm import Mapper, Session
from sqlalchemy.pool import NullPool
from sqlalchemy.util import ScopedRegistry, ThreadLocalRegistry

from .driver import Driver
from .flow import Client, Page, Step

# The thresholds every field run uses, clean and injected alike (STALE_DOCTOR_*_MAX_SECONDS).
THRESHOLD_SECONDS = 2.0


@dataclass
class Run:
    """One run of one app: its driver, the app once built, and what injections keep."""

    driver: Driver
    app: Flask | None = None
    kept: dict[str, Any] = field(default_factory=dict)

    def app_module(self) -> types.ModuleType:
        """`<package>.field_injection`: where injected code lives, as part of the app's package."""
        name = f"{self.driver.package}.field_injection"
        module = sys.modules.get(name)
        if module is None:
            module = types.ModuleType(name, "code the field harness injected into the app at run time")
            module.__dict__.update({k: v for k, v in globals().items() if not k.startswith("__")})
            sys.modules[name] = module
        return module

    def as_app_code(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """`fn` with the app module's globals: its frames are the app's own (`<package>.field_injection`)."""
        module = self.app_module()
        moved = types.FunctionType(fn.__code__, module.__dict__, fn.__name__, fn.__defaults__, fn.__closure__)
        moved.__qualname__ = fn.__qualname__
        return moved

    def read_endpoint(self) -> str:
        """The endpoint of the driver's read step, from its URL and the app's own url_map."""
        assert self.app is not None
        path, _, query = self.driver.read_path.partition("?")
        endpoint, _args = self.app.url_map.bind("localhost").match(path, "GET", query_args=query)
        return str(endpoint)


@dataclass
class Injection:
    cause: str
    what: str  # how users write this bug, in one line
    steps: Callable[[Run], list[Step]]  # install it in the built app; the steps that show it
    at_creation: Callable[[Run], None] | None = None  # run once the app is built (in the master, preloaded)
    serve: str = "test client"  # "test client", or "gunicorn" with --preload (the fork cases)
    applies: Callable[[Run], str | None] = lambda run: None  # on the built app: None, or why it is N/A


def _wrap_view(run: Run, endpoint: str, wrapper: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
    app = run.app
    assert app is not None
    app.view_functions[endpoint] = functools.wraps(app.view_functions[endpoint])(wrapper(app.view_functions[endpoint]))


def _read_write_read(run: Run) -> list[Step]:
    driver = run.driver
    read, write = driver.step(driver.read_step), driver.step(driver.write_step)
    return [read, write, Step(read.name + ", again", read.run, read.ok)]


def _registries(run: Run) -> list[Any]:
    assert run.app is not None
    return run.driver.registries(run.app)


def _needs_registry(run: Run) -> str | None:
    return None if _registries(run) else "the app keeps no scoped_session registry for its requests to swap"


def _needs_sqlite(run: Run) -> str | None:
    if run.driver.backend.name != "sqlite":
        return "a database server owns its files: no client reads a replaced file"
    return None if run.driver.sqlite_path() is not None else "the app reads no SQLite file of its own"


# ---- the injections -----------------------------------------------------------------------------

def _global_cache(run: Run) -> list[Step]:
    """The ORM objects a page loaded, kept in a module-level dict for the next requests."""
    module = run.app_module()
    module.OBJECTS = {}

    def keep_loaded(target: Any, context: Any) -> None:
        if len(module.OBJECTS) < 50:
            module.OBJECTS[(type(target).__name__, id(target))] = target

    event.listen(Mapper, "load", run.as_app_code(keep_loaded))
    read = run.driver.step(run.driver.read_step)
    return [read, Step(read.name + ", again", read.run, read.ok)]


def _uncommitted(run: Run) -> list[Step]:
    """The edit flushes where it should commit: `session.flush()` in place of `session.commit()`."""
    write = run.driver.step(run.driver.write_step)

    def flush_instead(self: Session) -> None:
        self.flush()

    def run_write(client: Client) -> Page:
        original = Session.commit
        Session.commit = run.as_app_code(flush_instead)  # type: ignore[method-assign]
        try:
            return write.run(client)
        finally:
            Session.commit = original  # type: ignore[method-assign]

    return [Step(write.name + " (flush, no commit)", run_write, write.ok)]


class _OneSession:
    """A registry that hands out one Session for ever and ignores remove(): a module-global Session."""

    def __init__(self, factory: Callable[[], Session]) -> None:
        self.factory, self.value = factory, None

    def __call__(self) -> Session:
        if self.value is None:
            self.value = self.factory()
        return self.value

    def has(self) -> bool:
        return self.value is not None

    def set(self, obj: Session) -> None:
        self.value = obj

    def clear(self) -> None:
        pass  # never removed: the next request gets the same Session


def _swap_registry(run: Run, make: Callable[[Any], Any]) -> None:
    for scoped in _registries(run):
        scoped.registry = make(scoped.session_factory)
        scoped.remove = run.as_app_code(lambda: None)  # the app's teardown remove() does nothing now


def _read_twice(run: Run) -> list[Step]:
    read = run.driver.step(run.driver.read_step)
    return [read, Step(read.name + ", again", read.run, read.ok)]


def _shared_session(run: Run) -> list[Step]:
    """One Session for every request: `SESSION = Session()` at module level, which the app's
    registry now hands to every request (and its teardown no longer closes)."""
    module = run.app_module()

    def module_global(factory: Callable[[], Session]) -> _OneSession:
        module.SESSION = factory()
        return _OneSession(lambda: module.SESSION)

    _swap_registry(run, module_global)
    return _read_twice(run)


def _scoped_not_removed(run: Run) -> list[Step]:
    """A thread-local scoped_session that nothing removes at the end of a request."""
    _swap_registry(run, ThreadLocalRegistry)
    return _read_twice(run)


def _scoped_wrong_scope(run: Run) -> list[Step]:
    """A scoped_session keyed by something coarser than the request (the process), never removed."""
    _swap_registry(run, lambda factory: ScopedRegistry(factory, run.as_app_code(lambda: "process")))
    return _read_twice(run)


def _long_transaction(run: Run) -> list[Step]:
    """A page that holds its transaction open past the threshold (a slow report in one transaction)."""
    driver, app = run.driver, run.app

    def slow(view: Callable[..., Any]) -> Callable[..., Any]:
        def view_in_a_long_transaction(*args: Any, **kwargs: Any) -> Any:
            driver.session(app).execute(text("SELECT 1"))  # the request's transaction begins
            time.sleep(THRESHOLD_SECONDS + 0.5)
            return view(*args, **kwargs)
        return run.as_app_code(view_in_a_long_transaction)

    _wrap_view(run, run.read_endpoint(), slow)
    return [run.driver.step(run.driver.read_step)]


def _background_app_context(run: Run) -> list[Step]:
    """A worker that pushes one app context and runs jobs in it; a job dies before its commit."""
    app, driver = run.app, run.driver
    assert app is not None

    def worker(client: Client) -> Page:
        context = app.app_context()
        context.push()  # a worker's `app.app_context().push()`: never popped while it runs jobs
        run.kept["context"] = context
        try:
            job()  # the job's transaction begins with its first read
            time.sleep(THRESHOLD_SECONDS + 0.5)  # ...its work...
            raise RuntimeError("the job failed before its commit")
        except RuntimeError:
            pass  # the worker logs it and takes the next job
        job()  # the next job's first statement
        return Page(200, "", {})

    def read_rows() -> None:  # a job of the worker's own: it reads the rows the pages show
        driver.session(app).execute(_model_table(run).select().limit(10)).all()

    job = (lambda: driver.job(app)) if type(driver).job is not Driver.job else run.as_app_code(read_rows)

    return [Step("a worker runs two jobs in one app context", run.as_app_code(worker))]


def _http_cache(run: Run) -> list[Step]:
    """The page cached whole in a module-level dict by URL, for five minutes, never invalidated."""
    pages: dict[str, tuple[float, Any]] = {}

    def cached(view: Callable[..., Any]) -> Callable[..., Any]:
        def view_cached_by_url(*args: Any, **kwargs: Any) -> Any:
            key = request.full_path
            hit = pages.get(key)
            if hit is not None and time.monotonic() - hit[0] < 300:
                return hit[1]
            response = run.app.make_response(view(*args, **kwargs))  # type: ignore[union-attr]
            response.freeze()
            pages[key] = (time.monotonic(), response)
            return response
        return run.as_app_code(view_cached_by_url)

    _wrap_view(run, run.read_endpoint(), cached)
    return _read_write_read(run)


def _browser_cache(run: Run) -> list[Step]:
    """The page sent with `Cache-Control: public, max-age=300`: browsers reuse it after an edit."""
    endpoint = run.read_endpoint()

    def cache_headers(response: Response) -> Response:
        if request.endpoint == endpoint and request.method == "GET":
            response.headers["Cache-Control"] = "public, max-age=300"
        return response

    assert run.app is not None
    run.app.after_request(run.as_app_code(cache_headers))
    return [run.driver.step(run.driver.read_step)]


def _session_cookie_snapshot(run: Run) -> list[Step]:
    """A text value the page loaded from the database copied into Flask's cookie session."""
    module = run.app_module()
    endpoint = run.read_endpoint()

    def first_text(target: Any, context: Any) -> None:
        if request and request.endpoint == endpoint and "shown" not in module.__dict__.setdefault("SEEN", {}):
            for attr in target.__mapper__.column_attrs:
                value = target.__dict__.get(attr.key)
                column = attr.columns[0]
                if isinstance(value, str) and len(value) >= 3 and not column.primary_key and not column.foreign_keys:
                    module.SEEN["shown"] = value
                    return

    def copy_into_cookie(response: Response) -> Response:
        value = module.__dict__.get("SEEN", {}).pop("shown", None)
        if request.endpoint == endpoint and value is not None:
            session["shown_name"] = value  # the bug: the value, not its id
        return response

    event.listen(Mapper, "load", run.as_app_code(first_text))
    assert run.app is not None
    run.app.after_request(run.as_app_code(copy_into_cookie))
    return [run.driver.step(run.driver.read_step)]


def _has_queue(run: Run) -> str | None:
    return None if type(run.driver).enqueue is not Driver.enqueue else "the app has no task queue"


def _enqueue_before_commit(run: Run) -> list[Step]:
    """A job about each edited row sent from an `after_flush` hook: the row is flushed, its commit
    has not happened, and the worker can run first (the ORM spelling of a `post_save` signal)."""
    app, driver, model = run.app, run.driver, run.driver.model_class(run.app)
    job = f"{driver.package}.field_injection.reindex"  # what a worker would run; none runs in this flow

    def notify_the_worker(session: Session, flush_context: Any) -> None:
        for obj in list(session.new) + list(session.dirty):  # after_flush: still the flush's own lists
            if isinstance(obj, model) and session.is_modified(obj):
                driver.enqueue(app, job, "/".join(str(part) for part in inspect(obj).identity or ()))

    event.listen(Session, "after_flush", run.as_app_code(notify_the_worker))
    return [run.driver.step(run.driver.write_step)]


def _has_data_cache(run: Run) -> str | None:
    assert run.app is not None
    if not run.app.extensions.get("cache"):
        return "the app has no Flask-Caching cache whose keys its edits delete"
    return None if run.driver.cached_read_step else "no step of the flow is served from the app's data cache"


def _cache_key_mismatch(run: Run) -> list[Step]:
    """The edit's invalidation deletes its keys under another name than the reads stored them under
    (the key's format changed in one place: a version suffix the reads do not use)."""
    app, driver = run.app, run.driver
    assert app is not None
    cached, write = driver.step(driver.cached_read_step), driver.step(driver.write_step)

    def delete_under_another_key(backend: Any) -> None:
        delete, delete_many = backend.delete, backend.delete_many

        def delete_v2(key: str, *args: Any, **kwargs: Any) -> Any:
            return delete(f"{key}:v2", *args, **kwargs)

        def delete_many_v2(*keys: str, **kwargs: Any) -> Any:
            return delete_many(*(f"{key}:v2" for key in keys), **kwargs)

        backend.delete, backend.delete_many = run.as_app_code(delete_v2), run.as_app_code(delete_many_v2)

    def read_then_change_the_keys(client: Client) -> Page:
        page = cached.run(client)  # served after the log-in request, so the doctor watches the backend already
        if "mismatched" not in run.kept:
            for backend in app.extensions["cache"].values():
                delete_under_another_key(backend)
            run.kept["mismatched"] = True
        return page

    return [Step(cached.name, read_then_change_the_keys, cached.ok), write,
            Step(cached.name + ", again", cached.run, cached.ok)]


def _model_table(run: Run) -> Any:
    assert run.app is not None
    return inspect(run.driver.model_class(run.app)).local_table


def read_at_creation(run: Run) -> None:
    """The rows of the page's table read once while the app is created (a lookup built at start)."""
    assert run.app is not None
    app, driver = run.app, run.driver

    def build_lookup() -> None:
        with app.app_context():
            session = driver.session(app)
            if session is None:  # nothing to read yet at creation (calibre-web: no library until the first run)
                run.kept["not_at_creation"] = "the app has no session for that table while it is created"
                return
            run.app_module().LOOKUP = session.execute(_model_table(run).select().limit(100)).all()
            driver.release(app)

    run.as_app_code(build_lookup)()


def _import_time(run: Run) -> list[Step]:
    return [run.driver.step(run.driver.write_step)]


def _sqlite_file_replaced(run: Run) -> list[Step]:
    """A restore copies a backup over the live SQLite file while the app's pool keeps connections."""
    path = run.driver.sqlite_path()
    assert path is not None
    read, write = run.driver.step(run.driver.read_step), run.driver.step(run.driver.write_step)

    def restore(client: Client) -> Page:
        backup = path.with_suffix(".backup")
        shutil.copyfile(path, backup)
        os.replace(backup, path)  # a new file at the path; pooled connections keep the old one open
        return Page(200, "", {})

    return [read, Step("an operator restores the database file from a backup", restore),
            Step(read.name + ", after the restore", read.run, read.ok), write]


def start_refresher(run: Run) -> None:
    """A thread started at app creation that refreshes a per-process copy of the page's rows, each
    refresh on a connection of its own (an engine with NullPool, as a careful refresher does: the
    app's pool is not touched before the fork, so the thread is the one cause injected)."""
    assert run.app is not None
    app, driver = run.app, run.driver
    module = run.app_module()
    module.SNAPSHOT = {}
    with app.app_context():
        engine = create_engine(driver.session(app).get_bind().url, poolclass=NullPool)
        driver.release(app)
    table = _model_table(run)

    def refresh_forever() -> None:
        while True:
            with engine.connect() as connection:
                module.SNAPSHOT["rows"] = connection.execute(table.select().limit(10)).all()
            time.sleep(0.5)

    threading.Thread(target=run.as_app_code(refresh_forever), name="snapshot-refresher", daemon=True).start()


def query_before_fork(run: Run) -> None:
    """One statement on the app's engine in the master: its connection stays in the pool."""
    assert run.app is not None
    with run.app.app_context():
        run.driver.session(run.app).execute(text("SELECT 1"))
        run.driver.release(run.app)


INJECTIONS: dict[str, Injection] = {i.cause: i for i in (
    Injection("global_cache", "ORM objects a page loaded kept in a module-level dict", _global_cache),
    Injection("uncommitted", "flush() where the edit should commit()", _uncommitted),
    Injection("shared_session", "one module-global Session for every request", _shared_session,
              applies=_needs_registry),
    Injection("scoped_session_not_removed", "a thread-local scoped_session never removed", _scoped_not_removed,
              applies=_needs_registry),
    Injection("scoped_session_wrong_scope", "a scoped_session keyed by the process, never removed",
              _scoped_wrong_scope, applies=_needs_registry),
    Injection("long_transaction", "a page that holds its transaction past the threshold", _long_transaction),
    Injection("background_app_context", "a worker's app context pushed once; a job dies before its commit",
              _background_app_context),
    Injection("http_cache", "the page cached whole by URL for five minutes, never invalidated", _http_cache),
    Injection("browser_cache", "the page sent with Cache-Control: public, max-age=300", _browser_cache),
    Injection("session_cookie_snapshot", "a value loaded from the database copied into the cookie session",
              _session_cookie_snapshot),
    Injection("import_time", "the page's table read once while the app is created", _import_time,
              at_creation=read_at_creation, applies=lambda run: run.kept.get("not_at_creation")),
    Injection("sqlite_file_replaced", "a backup copied over the live SQLite file", _sqlite_file_replaced,
              applies=_needs_sqlite),
    Injection("enqueue_before_commit", "a job about each edited row sent from an after_flush hook",
              _enqueue_before_commit, applies=_has_queue),
    Injection("cache_key_mismatch", "the edit deletes its cache keys under another name than the reads use",
              _cache_key_mismatch, applies=_has_data_cache),
    Injection("pool_across_fork", "a query at app creation under gunicorn --preload", _read_twice,
              at_creation=query_before_fork, serve="gunicorn"),
    Injection("prefork_refresher", "a refresher thread started at app creation under gunicorn --preload",
              _read_twice, at_creation=start_refresher, serve="gunicorn"),
)}
