"""ORM objects that outlive their request: global_cache.

Every object a request loads is stamped in `state.info` (which survives pickling, so a Redis
round-trip keeps it) with the request's serial, and remembered by weak reference. When that
request is over and its session is gone, its objects should be gone too (the identity map is
weak); one that is still alive at a later request's start, after a garbage collection, is held
by something outside any request: a module-level cache, a global, a class attribute. The
doctor then looks for the module global that holds it, to name it. At the boundaries it also
checks objects reaching a template, lazy loads of such objects, and DetachedInstanceError.
"""

from __future__ import annotations

import gc
import sys
import time
import traceback
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterable

from sqlalchemy.orm import InstanceState
from sqlalchemy.orm.exc import DetachedInstanceError

from .scopes import Scope, current

if TYPE_CHECKING:
    from .monitor import Monitor

STAMP_KEY = "stale_doctor"
LOADED_AT_KEY = "stale_doctor_loaded_at"  # (scope serial, statement number) of the last load or refresh
FULL_GC_EVERY_SECONDS = 5.0
MAX_HOLDER_SEARCHES = 5


@dataclass(eq=False)
class FinishedLoads:
    label: str
    summary: dict[str, Any]
    refs: list["weakref.ReferenceType[InstanceState[Any]]"]


def load_listener(m: "Monitor") -> Callable[..., None]:
    """The listener for every loaded (or refreshed) row: the doctor's hottest path, so it guards
    itself instead of going through `Monitor.guard`, and does three dictionary operations."""
    get_scope, ref = current.get, weakref.ref

    def on_load(state: InstanceState[Any], context: Any, *_keys: Any) -> None:
        try:
            scope = get_scope()
            if scope is None or scope.kind != "request":
                return
            info = state.info
            info[LOADED_AT_KEY] = (scope.serial, scope.statements)  # identity_map: when its row was last read
            if info.get(STAMP_KEY) is scope.stamp:
                return
            info[STAMP_KEY] = scope.stamp
            scope.loaded.append(ref(state))
        except Exception:
            m.internal_error("objects.on_load")

    return on_load


def remember_finished(m: "Monitor", scope: Scope) -> None:
    if scope.loaded:
        m.finished_loads.append(FinishedLoads(scope.label(), scope.summary(), scope.loaded))
        scope.loaded = []


def _alive(entry: FinishedLoads) -> list[Any]:
    """Objects of the entry still alive and detached: held by nothing the ORM knows of.

    An object still in a live session's identity map is that session's (a session kept across
    requests, which the session checks name); a cache holds objects whose session is gone.
    """
    objects = []
    for ref in entry.refs:
        state = ref()
        obj = state.obj() if state is not None else None
        if obj is not None and state.session is None:
            objects.append(obj)
    return objects


def _held(objects: list[Any]) -> list[Any]:
    """Those of `objects` something of the app can still reach (one walk of the heap for all).

    An object held only by the collections of parent objects that are gone is reachable by
    nobody: SQLAlchemy keeps a parent's attribute dictionary (not the parent) in a statement it
    caches (a relationship comparison's bound value closes over it), and with it the children
    loaded into its collections: alive, detached, yet read by nobody. A cache holds objects
    themselves.
    """
    ids = {id(obj) for obj in objects}
    held: set[int] = set()
    for referrer in gc.get_referrers(*objects):  # skips its own argument tuple
        if referrer is objects:
            continue
        adapter = getattr(referrer, "_sa_adapter", None)  # an ORM collection (InstrumentedList, -Set, -Dict)
        if adapter is not None and adapter.owner_state.obj() is None:
            continue
        held.update(id(ref) for ref in gc.get_referents(referrer) if id(ref) in ids)
        if len(held) == len(ids):
            break
    return [obj for obj in objects if id(obj) in held]


def sweep_survivors(m: "Monitor", scope: Scope) -> None:
    """At a request's start: objects of finished requests that are still alive."""
    if not m.finished_loads:
        return
    suspects = [entry for entry in list(m.finished_loads) if _alive(entry)]
    if not suspects:
        m.finished_loads.clear()
        return
    gc.collect(1)  # young reference cycles are not a cache
    suspects = [entry for entry in suspects if _alive(entry)]
    m.finished_loads.clear()
    if not suspects:
        return
    now = time.monotonic()
    if now - m.last_full_gc <= FULL_GC_EVERY_SECONDS:
        m.finished_loads.extend(suspects)  # confirmed at a later request, after a full collection
        return
    m.last_full_gc = now
    gc.collect()
    for entry in suspects:
        alive = _alive(entry)
        alive = _held(alive)
        if not alive:
            continue
        models = tuple(sorted({type(o).__name__ for o in alive}))
        holder = _holder_of(m, alive[0])
        m.global_cache_seen = True
        m.emit("global_cache",
               f"{len(alive)} ORM object(s) ({', '.join(models)}) loaded by {entry.label} are still held after that "
               f"request ended{f', by {holder}' if holder else ''}, as {scope.label()} begins: they keep the values "
               f"they had when loaded, and nothing reloads them",
               f"held:{holder or entry.summary.get('endpoint')}", scope, location=holder or "", models=models,
               loaded_by=entry.summary, held_by=holder, objects=len(alive))
        del alive


def _holder_of(m: "Monitor", obj: Any, depth: int = 6) -> str | None:
    """`module.name` of a module global that reaches `obj` through containers, if one does."""
    if m.holder_searches >= MAX_HOLDER_SEARCHES:
        return None
    m.holder_searches += 1
    modules = {id(vars(mod)): name for name, mod in list(sys.modules.items()) if mod is not None and hasattr(mod, "__dict__")}
    frontier: list[Any] = [obj]
    seen = {id(obj), id(frontier)}
    for _ in range(depth):
        nxt: list[Any] = []
        for item in frontier:
            for referrer in gc.get_referrers(item):
                if id(referrer) in seen or referrer is nxt or referrer is frontier or type(referrer).__name__ == "frame":
                    continue
                seen.add(id(referrer))
                if id(referrer) in modules and isinstance(referrer, dict):
                    for key, value in referrer.items():
                        if value is item:
                            return f"{modules[id(referrer)]}.{key}"
                    continue
                if isinstance(referrer, (dict, list, tuple, set)) or hasattr(referrer, "__dict__"):
                    nxt.append(referrer)
        frontier = nxt[:200]
        if not frontier:
            break
    return None


def _foreign(scope: Scope, obj: Any) -> tuple[int, str] | None:
    if not hasattr(type(obj), "__mapper__"):
        return None
    state = getattr(obj, "_sa_instance_state", None)
    if not isinstance(state, InstanceState):
        return None
    stamp = state.info.get(STAMP_KEY)
    if stamp is None or stamp[0] == scope.serial:
        return None
    return stamp[0], stamp[2]


def check_values(m: "Monitor", scope: Scope, values: Iterable[Any], where: str) -> None:
    """ORM objects from an earlier request reaching `where` (a template's context)."""
    for value in values:
        items = list(value.values())[:100] if isinstance(value, dict) else (
            list(value)[:100] if isinstance(value, (list, tuple)) else [value])
        for item in items:
            foreign = _foreign(scope, item)
            if foreign is not None:
                model = type(item).__name__
                m.emit("global_cache",
                       f"a {model} loaded by {foreign[1]} reaches {where} in {scope.label()}: an object of an earlier "
                       f"request's session, with the values it had then",
                       f"render:{model}@{scope.endpoint}", scope, models=(model,))
                return


def check_lazy_load(m: "Monitor", scope: Scope, orm_state: Any) -> None:
    parent = orm_state.lazy_loaded_from
    if parent is None:
        return
    stamp = parent.info.get(STAMP_KEY)
    if stamp is None or stamp[0] == scope.serial:
        return
    model = parent.mapper.class_.__name__
    m.emit("global_cache",
           f"{scope.label()} lazy-loads a relationship of a {model} loaded by {stamp[2]}: an object kept from an "
           f"earlier request, now attached to another session",
           f"lazy:{model}@{scope.endpoint}", scope, models=(model,))


def _raised_in(m: "Monitor", scope: Scope, exception: BaseException) -> str:
    """The innermost frame of the traceback in the user's packages ("" if none)."""
    settings = m.settings_for(scope)
    packages = settings.app_packages if settings else ()
    where = ""
    for frame in traceback.extract_tb(exception.__traceback__):
        module = frame.filename
        for name, mod in list(sys.modules.items()):
            if mod is not None and getattr(mod, "__file__", None) == module and name.split(".")[0] in packages:
                where = f"{name}:{frame.lineno} in {frame.name}"
    return where


def check_exception(m: "Monitor", scope: Scope, exception: BaseException) -> None:
    if isinstance(exception, DetachedInstanceError):
        m.emit("global_cache",
               f"{scope.label()} failed with DetachedInstanceError ({exception}): an ORM object whose session is gone "
               f"was used, typically one kept in a cache or a global after its request",
               f"detached@{scope.endpoint}", scope, location=_raised_in(m, scope, exception))
