"""Sessions: shared_session, the scoped_session family, uncommitted, lost_update, identity_map.

A session is stamped (in `session.info`, never by a strong reference of the doctor's) with a
token and the last scope that used it. The first use of a session in a new request, when an
earlier request used it, is a carry-over; which cause it is depends on where the session
comes from: a thread-local scoped_session (not removed), a scoped_session keyed coarser than
the request (wrong scope), one app context serving several requests (a test suite), or a
plain Session shared by requests (a module global, two threads, or two requests at once).
"""

from __future__ import annotations

import datetime as dt
import itertools
import numbers
import sys
import time
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.orm import Session, scoped_session
from sqlalchemy.util import ScopedRegistry, ThreadLocalRegistry

from .evidence import isolation_note, user_frame
from .objects import LOADED_AT_KEY, check_lazy_load
from .scopes import Scope
from .transactions import TX_KEY, TxInfo, check_age

if TYPE_CHECKING:
    from .monitor import AppState, Monitor

TRACK_KEY = "stale_doctor"
CREATED_KEY = "stale_doctor_created"  # in an InstanceState's info: the serial of the request that INSERTed its row
_tokens = itertools.count(1)
RESCAN_SECONDS = 5.0
# Models of libraries' own bookkeeping (kombu's SQLAlchemy transport keeps its queue in a row
# it updates per message; Celery's database result store): not the app's data, never a lost update.
LIBRARY_MODULES = ("kombu.", "celery.")


@dataclass(eq=False)
class Track:
    """What the doctor remembers of one Session, kept in its `info`."""

    token: str
    last: "weakref.ReferenceType[Scope] | None" = None
    last_serial: int = 0
    last_kind: str = ""
    last_label: str = ""
    last_thread: int = 0
    last_context_serial: int = 0  # the app context pushed outside requests that the last request ran in
    threads: set[int] = field(default_factory=set)
    wrote: dict[str, Any] | None = None
    tx: TxInfo | None = None
    shared: bool = False  # reported as shared_session: its rollbacks are the sharing's, not a missing commit


def track_of(session: Session) -> Track:
    track = session.info.get(TRACK_KEY)
    if track is None:
        track = session.info[TRACK_KEY] = Track(f"session-{next(_tokens)}@{id(session):x}")
    return track


class Registries:
    """The user's session registries: the `db` given to the doctor, and every scoped_session,
    Flask-SQLAlchemy object or plain Session found at module level in the app's packages."""

    def __init__(self, packages: tuple[str, ...], db: Any) -> None:
        self.packages = packages
        self.scoped: list[tuple[str, scoped_session[Any], str]] = []  # (name, registry, kind when found)
        self._found_with: dict[int, Any] = {}  # id(scoped_session) -> its .registry when it was found
        self.globals: dict[int, tuple[str, weakref.ReferenceType[Any]]] = {}
        self._scanned_at = 0.0
        self._module_count = -1
        self._seen: set[int] = set()
        if db is not None:
            self._add_db("the db given to StaleDoctor", db)

    def _add_db(self, name: str, value: Any) -> None:
        registry = value if isinstance(value, scoped_session) else getattr(value, "session", None)
        if isinstance(registry, scoped_session) and id(registry) not in self._seen:
            self._seen.add(id(registry))
            flask_sqlalchemy = type(value).__module__.split(".")[0] == "flask_sqlalchemy"
            self.scoped.append((f"{name}.session" if flask_sqlalchemy else name, registry,
                                "app_context" if flask_sqlalchemy and _flask_sqlalchemy_scope(registry)
                                else _kind(registry)))
            self._found_with[id(registry)] = registry.registry

    def scan(self) -> None:
        """Look for registries at module level in the app's packages (cheap; at most every 5 s)."""
        now = time.monotonic()
        if len(sys.modules) == self._module_count and now - self._scanned_at < RESCAN_SECONDS:
            return
        self._scanned_at, self._module_count = now, len(sys.modules)
        for module_name, module in list(sys.modules.items()):
            if module is None or module_name.split(".")[0] not in self.packages:
                continue
            for attr, value in list(vars(module).items()):
                if isinstance(value, scoped_session) or type(value).__name__ == "SQLAlchemy":
                    self._add_db(f"{module_name}.{attr}", value)
                elif isinstance(value, Session):
                    self.globals[id(value)] = (f"{module_name}.{attr}", weakref.ref(value))

    def global_name(self, session: Session) -> str | None:
        entry = self.globals.get(id(session))
        if entry is not None and entry[1]() is session:
            return entry[0]
        return None

    def registry_of(self, session: Session) -> tuple[str, str, scoped_session[Any]] | None:
        """(kind, name, registry) of the registry that holds `session` now, if one does."""
        for name, scoped, kind in self.scoped:
            registry = scoped.registry
            if registry is not self._found_with.get(id(scoped)):
                kind = _kind(scoped)  # its registry was replaced since (a scopefunc of the app's own)
            if isinstance(registry, ThreadLocalRegistry):
                if registry.has() and registry() is session:
                    return kind, name, scoped
            elif isinstance(registry, ScopedRegistry):
                if any(held is session for held in list(registry.registry.values())):
                    return kind, name, scoped
        return None


def _kind(registry: scoped_session[Any]) -> str:
    return "thread" if isinstance(registry.registry, ThreadLocalRegistry) else "scoped"


def _flask_sqlalchemy_scope(registry: scoped_session[Any]) -> bool:
    """Is this Flask-SQLAlchemy's own scope (its app-context id; before 3.0 the context stack's
    ident function), not a `session_options={"scopefunc": ...}` of the app's?"""
    scopefunc = getattr(registry.registry, "scopefunc", None)
    module = getattr(scopefunc, "__module__", None) or type(scopefunc).__module__
    return module.split(".")[0] in ("flask_sqlalchemy", "flask", "werkzeug", "threading", "_thread", "greenlet")


# ---- first use of a session in a scope ----------------------------------------------------

def session_used(m: "Monitor", session: Session, scope: Scope | None) -> Track | None:
    """Note that `scope` (the running, watched scope) uses `session`; classify a carry-over."""
    if scope is None:
        return None
    track = track_of(session)
    if track.last_serial == scope.serial:
        return track
    scope.use_session(session)
    previous = track.last() if track.last is not None else None
    if track.last_serial and scope.kind == "request" and track.last_kind == "request":
        state = m.state_for(scope.app())
        if state is not None:
            carried_over(m, state, scope, session, track, previous)
    track.last, track.last_serial, track.last_kind = weakref.ref(scope), scope.serial, scope.kind
    track.last_label, track.last_thread = scope.label(), scope.thread
    outer = scope.previous
    track.last_context_serial = outer.serial if outer is not None and outer.placeholder else 0
    if len(track.threads) < 64:
        track.threads.add(scope.thread)
    return track


def carried_over(m: "Monitor", state: "AppState", scope: Scope, session: Session, track: Track,
                 previous: Scope | None, at_start: bool = False) -> None:
    """`session` served an earlier request and now serves `scope`: name the cause."""
    state.registries.scan()
    concurrent = previous is not None and not previous.ended and previous.thread != scope.thread
    threads = track.threads | {scope.thread}
    tx = track.tx if session.in_transaction() else None
    open_since_earlier = tx is not None and tx.scope_serial != scope.serial
    tx_text = ""
    if open_since_earlier:
        tx.explained = True
        tx_text = (f"; its transaction, begun in {tx.scope_label} {tx.age():.1f} s ago, is still open "
                   f"({isolation_note(tx.isolation)})")
    before = track.last_label
    now_label = scope.label()
    where = "at the start of" if at_start else "in"
    location = "" if at_start else None  # at a request's start no frame of the user's code runs
    evidence = {"session": track.token, "previous_request": previous.summary() if previous else before,
                "threads_seen": len(threads), **(tx.evidence() if tx else {})}
    found = state.registries.registry_of(session)
    if found is not None and found[0] == "thread":
        m.emit("scoped_session_not_removed",
               f"{track.token} from the thread-local scoped_session {found[1]} served {before} and is back {where} "
               f"{now_label} on the same thread: nothing called remove() at the end of the request{tx_text}",
               track.token, scope, location=location, registry=found[1], **evidence)
    elif found is not None and found[0] == "app_context":
        # The earlier request's scope is usually gone (weakly held); its app context is kept by serial.
        context = scope.previous
        shared_context = (context is not None and context.placeholder and track.last_context_serial == context.serial)
        if shared_context:
            m.emit("scoped_session_wrong_scope",
                   f"Flask-SQLAlchemy's {track.token} served {before} and now {now_label}: both ran in one app "
                   f"context pushed outside the requests (a test fixture or a `with app.app_context()` around "
                   f"them); with Flask {_flask_version()} a request reuses an app context already pushed, so the "
                   f"session scoped to it is not removed between requests{tx_text}",
                   track.token, scope, location=location, registry=found[1], scope_key="the app context",
                   app_context_requests=context.requests_served, **evidence)
        else:
            m.emit("scoped_session_not_removed",
                   f"Flask-SQLAlchemy's {track.token} served {before} and is back {where} {now_label}, in another "
                   f"app context: the first request's teardown did not remove it (an error in remove()?), and "
                   f"the registry, keyed by id() of the app context, handed it to a new context at the same "
                   f"address{tx_text}",
                   track.token, scope, location=location, registry=found[1], **evidence)
    elif found is not None:
        scopefunc = getattr(found[2].registry, "scopefunc", None)
        m.emit("scoped_session_wrong_scope",
               f"{track.token} from scoped_session {found[1]} (scopefunc {getattr(scopefunc, '__qualname__', scopefunc)}) "
               f"served {before} and is back {where} {now_label}"
               f"{' on another thread' if len(threads) > 1 else ''}: its scope is coarser than a request and "
               f"nothing removes it{tx_text}",
               track.token, scope, location=location, registry=found[1], **evidence)
    else:
        name = state.registries.global_name(session)
        if name is not None or concurrent or len(threads) > 1 or not open_since_earlier:
            track.shared = True
            how = ("at the same time, on two threads" if concurrent
                   else "on two threads in turn" if len(threads) > 1 else "in turn")
            m.emit("shared_session",
                   f"{track.token}{f' (the module global {name})' if name else ''} served {before} and {now_label} "
                   f"{how}: one Session for several requests{tx_text}",
                   track.token, scope, location=location, module_global=name, concurrent=concurrent, **evidence)
        else:
            m.emit("long_transaction",
                   f"the transaction of {track.token}, begun in {tx.scope_label} {tx.age():.1f} s ago, is still "
                   f"open {where} {now_label}: a session kept between requests (per thread) never ends it, so "
                   f"{isolation_note(tx.isolation)}",
                   track.token, scope, location=location, **evidence)


def check_leftovers(m: "Monitor", state: "AppState", scope: Scope) -> None:
    """At a request's start: does a registry already hold a session from an earlier request?"""
    state.registries.scan()
    for name, scoped, kind in state.registries.scoped:
        registry = scoped.registry
        try:
            if not registry.has():
                continue
            session = registry()
        except Exception:  # a scopefunc that needs more than the request context: skip it
            continue
        track = session.info.get(TRACK_KEY)
        if track is None or not track.last_serial or track.last_kind != "request" or track.last_serial == scope.serial:
            continue
        previous = track.last() if track.last is not None else None
        carried_over(m, state, scope, session, track, previous, at_start=True)


def _flask_version() -> str:
    from importlib.metadata import version

    try:
        return version("flask")
    except Exception:
        return "?"


# ---- event handlers -------------------------------------------------------------------------

def on_orm_execute(m: "Monitor", orm_state: Any) -> None:
    session = orm_state.session
    scope = m.watched()
    track = session_used(m, session, scope)
    if track is None or scope is None:
        return
    if orm_state.is_select:
        mapper = orm_state.bind_mapper  # the statement's main entity: cheaper than all_mappers per read
        scope.selecting = mapper.local_table.name if mapper is not None else None
        if mapper is not None:
            scope.tables_read.add(mapper.local_table.name)
        if orm_state.is_relationship_load:
            check_lazy_load(m, scope, orm_state)
    elif orm_state.is_insert or orm_state.is_update or orm_state.is_delete:
        tables = sorted({mp.local_table.name for mp in orm_state.all_mappers if hasattr(mp, "local_table")})
        _wrote(m, track, scope, tables, "INSERT" if orm_state.is_insert else "UPDATE" if orm_state.is_update else "DELETE")
    if scope.kind == "job" and track.tx is not None and session.in_transaction():
        if not track.tx.reported and not track.tx.explained:
            check_age(m, track.tx, scope)


def _wrote(m: "Monitor", track: Track, scope: Scope | None, tables: list[str], verb: str) -> None:
    settings = m.settings_for(scope)
    if track.wrote is None:
        track.wrote = {"tables": set(), "verbs": set(), "scope": scope.summary() if scope else None,
                       "label": scope.label() if scope else "outside any request",
                       "location": user_frame(settings.app_packages) if settings else None}
    track.wrote["tables"].update(tables)
    track.wrote["verbs"].add(verb)


def on_after_begin(m: "Monitor", session: Session, conn: Any) -> None:
    track = session_used(m, session, m.watched()) or track_of(session)
    tx = conn.info.get(TX_KEY)
    if tx is not None:
        tx.session_token = track.token
        track.tx = tx


def on_before_flush(m: "Monitor", session: Session) -> None:
    scope = m.watched()
    track = session_used(m, session, scope)
    if track is None or scope is None or scope.kind != "request":
        return
    if scope.locked_at:
        check_written_before_lock(m, scope, session)
    if scope.locking_reads:
        return
    submitted: set[str] | None = None
    for obj in list(session.dirty):
        state = inspect(obj)
        if state.mapper.version_id_col is not None or not session.is_modified(obj):
            continue
        if state.mapper.class_.__module__.startswith(LIBRARY_MODULES):
            continue
        stamp = state.info.get("stale_doctor")
        if not stamp or stamp[0] != scope.serial or state.info.get(CREATED_KEY) == scope.serial:
            continue  # not read in this request, or a row this request inserted: nobody was shown it before
        if submitted is None:
            submitted = submitted_values()
        changed = sorted(a.key for a in state.attrs if a.history.has_changes())
        kinds = read_modify_write(state, changed, submitted)
        if not kinds:
            continue  # a blind write (a timestamp touch, a value of the code's own): no edit it could lose
        model = state.mapper.class_.__name__
        m.emit("lost_update",
               f"{scope.label()} read {model} {state.identity} and now UPDATEs it, setting "
               f"{' and '.join(f'{key} to {how}' for key, how in kinds.items())}, with only its primary key in the "
               f"WHERE clause: an edit committed in between is overwritten, and what the user saw is never checked",
               f"{model}@{scope.endpoint}", scope, models=(model,), table=state.mapper.local_table.name,
               changed=changed, read_modify_write=kinds, session=track_of(session).token)


def submitted_values() -> set[str]:
    """The values the running request submitted (form, query string, JSON leaves, URL parts), as text."""
    from flask import has_request_context, request

    if not has_request_context():
        return set()
    values: set[str] = set()
    for multi in (request.form, request.args):
        for items in multi.listvalues():
            values.update(str(v) for v in items)
    values.update(str(v) for v in (request.view_args or {}).values())
    stack = [request.get_json(silent=True)] if request.is_json else []
    while stack and len(values) < 10_000:
        item = stack.pop()
        if isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif item is not None:
            values.add(str(item))
    return values


def read_modify_write(state: Any, changed: list[str], submitted: set[str]) -> dict[str, str]:
    """The changed attributes whose new value depends on a read, with how: a value the request
    submitted (the user's edit of a row they were shown), or a number changed from the one loaded
    (a counter, a balance). A date or time (also one stored as a number: the clock in epoch
    seconds, milliseconds or microseconds), a foreign or primary key set by the code, a text of
    the code's own (a token, a status) is a blind write: no earlier edit is lost by it."""
    kinds: dict[str, str] = {}
    table = state.mapper.local_table
    for key in changed:
        history = state.attrs[key].history
        new = history.added[0] if history.added else None
        old = history.deleted[0] if history.deleted else None
        if isinstance(new, (dt.date, dt.time, dt.timedelta)):
            continue
        if new is not None and str(new) in submitted and str(new) != "":
            kinds[key] = "a value the request submitted"
            continue
        column = table.columns.get(key)
        keyish = column is not None and (column.primary_key or column.foreign_keys)
        if (isinstance(new, numbers.Number) and isinstance(old, numbers.Number) and not isinstance(new, bool)
                and not isinstance(old, bool) and not keyish and new != 0 and not reads_as_now(new)):
            kinds[key] = f"a number changed from the one loaded ({old!r} -> {new!r})"
    return kinds


CLOCK_SCALES = (1, 1_000, 1_000_000)  # epoch seconds, milliseconds, microseconds
CLOCK_SLACK_SECONDS = 86_400


def reads_as_now(value: Any) -> bool:
    """A number that is the clock, in epoch seconds, ms or µs, within a day of now (`time.time()
    * 1000` stamped as a row's update time): a time, not a value computed from the one loaded."""
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        return False
    now = time.time()
    return any(abs(number / scale - now) <= CLOCK_SLACK_SECONDS for scale in CLOCK_SCALES)


def check_written_before_lock(m: "Monitor", scope: Scope, session: Session) -> None:
    """identity_map: an object about to be UPDATEd whose table this request locked (FOR UPDATE)
    after the object's row was last read into it. A locking read that finds the object already
    in the identity map returns it as it is, without populate_existing (or an expire first):
    no load or refresh event fires for it, so its attributes are what the earlier read loaded,
    not the row the lock returned, and the UPDATE is computed from them."""
    for obj in list(session.dirty):
        state = inspect(obj)
        table = state.mapper.local_table.name
        locked = scope.locked_at.get(table)
        loaded = state.info.get(LOADED_AT_KEY)
        if locked is None or not loaded or loaded[0] != scope.serial or loaded[1] >= locked:
            continue
        if not session.is_modified(obj):
            continue
        changed = sorted(a.key for a in state.attrs if a.history.has_changes())
        loaded_values = {a.key: _plain(a.history.deleted[0]) for a in state.attrs
                         if a.history.has_changes() and a.history.deleted}
        model = state.mapper.class_.__name__
        m.emit("identity_map",
               f"{scope.label()} locked {table} (SELECT ... FOR UPDATE, statement {locked}) after loading {model} "
               f"{state.identity} (statement {loaded[1]}), and the locking read did not refresh it (no "
               f"populate_existing, no expire): it now UPDATEs {', '.join(changed)} from the values loaded before the "
               f"lock ({loaded_values}), over whatever the lock waited for",
               f"{model}@{scope.endpoint}", scope, models=(model,), table=table, changed=changed,
               loaded_values=loaded_values, loaded_at_statement=loaded[1], locked_at_statement=locked,
               session=track_of(session).token,
               isolation_level=(track_of(session).tx.isolation if track_of(session).tx is not None else None))


def _plain(value: Any) -> Any:
    return value if isinstance(value, (str, int, float, bool, type(None))) else repr(value)


def on_after_flush(m: "Monitor", session: Session) -> None:
    # `dirty` also holds objects an attribute was set on with its own value: the flush sent no UPDATE for them.
    updated = [o for o in session.dirty if session.is_modified(o)]
    if not (session.new or updated or session.deleted):
        return
    track = track_of(session)
    tables = sorted({inspect(o).mapper.local_table.name for o in [*session.new, *updated, *session.deleted]})
    verbs = [v for v, objs in (("INSERT", session.new), ("UPDATE", updated), ("DELETE", session.deleted)) if objs]
    scope = m.watched()
    if scope is not None:
        for obj in session.new:
            inspect(obj).info[CREATED_KEY] = scope.serial  # lost_update: a row of this request's own
    for verb in verbs:
        _wrote(m, track, scope, tables, verb)


def on_after_commit(m: "Monitor", session: Session) -> None:
    track = session.info.get(TRACK_KEY)
    if track is not None and track.wrote is not None:
        now = time.monotonic()
        for table in track.wrote["tables"]:
            m.table_commits[table] = now
        track.wrote = None


def on_after_rollback(m: "Monitor", session: Session) -> None:
    track = session.info.get(TRACK_KEY)
    if track is not None:
        track.wrote = None  # an explicit rollback is the app's own decision


def on_transaction_end(m: "Monitor", session: Session, transaction: Any) -> None:
    if transaction.parent is not None:
        return
    track = session.info.get(TRACK_KEY)
    if track is None:
        return
    track.tx = None
    wrote, track.wrote = track.wrote, None
    if wrote is None or track.shared:
        return  # a shared session's writes are rolled back by whichever request fails on it: shared_session says so
    scope = m.watched()
    acknowledged = ""
    status = (wrote.get("scope") or {}).get("status") or (scope.status if scope is not None else None)
    if status is not None and status < 400:
        acknowledged = f", though it answered {status}"
    m.emit("uncommitted",
           f"{wrote['label']} sent {'/'.join(sorted(wrote['verbs']))} to {', '.join(sorted(wrote['tables']))} and its "
           f"transaction ended without a commit{acknowledged}: the session was closed, which rolled the change back",
           f"uncommitted@{(wrote.get('scope') or {}).get('endpoint')}", scope, location=wrote.get("location") or "",
           session=track.token, tables=sorted(wrote["tables"]), written_in=wrote.get("scope"))


def check_pending(m: "Monitor", scope: Scope) -> None:
    """At a request's end: changes added to its sessions but never flushed nor committed."""
    for session in scope.live_sessions():
        pending = [*session.new, *session.deleted, *(o for o in session.dirty if session.is_modified(o))]
        if not pending:
            continue
        models = tuple(sorted({type(o).__name__ for o in pending}))
        track = track_of(session)
        m.emit("uncommitted",
               f"{scope.label()} ends with {len(pending)} change(s) to {', '.join(models)} in {track.token} that were "
               f"never committed: they are discarded when the session closes",
               f"pending@{scope.endpoint}", scope, location="", models=models, session=track.token)
