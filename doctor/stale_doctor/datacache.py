"""Data caches: cache_key_mismatch, an edit that deletes another cache key than its read stored.

Flask-Caching keeps each `Cache`'s backend in `app.extensions["cache"]` ({Cache: backend}).
When the doctor is enabled it wraps that backend's public `get` / `set` / `delete` /
`delete_many` once (the wrapper calls the original and returns its result unchanged), and keeps
a few notes of its own in the same store (so they are shared by every worker that shares it),
under keys starting with `stale_doctor:`:
- a `set` in a request notes which rows the value was built from (table and primary key): the
  rows the request loaded since that key's `get` missed (a memoized function or a cached view
  reads, misses, computes, sets), or every row the request loaded for a `set` with no miss before
  it (a value computed, then stored);
- a `delete` in a request that committed writes to rows notes, per written row, the keys the
  request deleted, and when;
- a request that committed writes to rows and deleted no key in a store notes the same there,
  with no key;
- a `get` that hits looks up the rows the value was built from: if one of them was written and
  committed by a request after the value was stored, the value is older than the edit. When
  that request deleted other keys, the edit's invalidation missed it (cache_key_mismatch: the
  keys deleted and the key served are the evidence); when it deleted none, nothing invalidates
  this cache (http_cache: a cache in the server, a view's or a function's, answers with rows
  from before the commit). A hit of a value no edit touched since is no finding.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Callable

from sqlalchemy.orm import Session, class_mapper

from .scopes import current
from .sessions import TRACK_KEY

if TYPE_CHECKING:
    from .monitor import Monitor

PREFIX = "stale_doctor:"
WRAPPED = "_stale_doctor_wrapped"
WRITTEN_KEY = "stale_doctor.cache_rows_written"  # session.info: rows flushed, not yet committed
NOTE_SECONDS = 3600

_committed_rows: dict[int, set[tuple[str, str]]] = {}  # request serial -> rows its commits wrote
# request serial -> the identity keys (class, primary key, token) of the rows it loaded, in the
# order loaded: kept as the ORM gives them, so a load costs a dict insertion; made (table, key)
# rows only when needed.
_loaded_keys: dict[int, dict[tuple[Any, ...], None]] = {}
_misses: dict[int, dict[str, int]] = {}  # request serial -> cache key -> rows it had loaded when the key missed
_deleters: dict[int, set[int]] = {}  # request serial -> id() of each store it deleted a key in


def _row(state: Any) -> tuple[str, str] | None:
    if state.identity is None:
        return None
    return state.mapper.local_table.name, "/".join(str(part) for part in state.identity)


def _loaded_rows(serial: int, since: int = 0) -> set[tuple[str, str]]:
    """The rows (table, primary key) request `serial` loaded (after its first `since` loads)."""
    rows = set()
    for class_, identity, _token in list(_loaded_keys.get(serial, {}))[since:]:
        rows.add((class_mapper(class_).local_table.name, "/".join(str(part) for part in identity)))
    return rows


def load_listener(m: "Monitor") -> Callable[..., None]:
    """Rows (table, primary key) each request loads: what a value it caches was built from."""
    get_scope = current.get

    def on_load(state: Any, context: Any, *_keys: Any) -> None:
        try:
            scope = get_scope()
            if scope is not None and scope.kind == "request" and state.key is not None:
                _loaded_keys.setdefault(scope.serial, {})[state.key] = None
        except Exception:
            m.internal_error("datacache.on_load")

    return on_load


def on_after_flush(m: "Monitor", session: Session) -> None:
    from sqlalchemy import inspect

    written = session.info.setdefault(WRITTEN_KEY, set())
    for obj in [*session.dirty, *session.deleted]:
        row = _row(inspect(obj))
        if row is not None:
            written.add(row)


def on_after_commit(m: "Monitor", session: Session) -> None:
    """Rows this commit wrote: flushed objects, and (for ORM or Core UPDATE / DELETE statements,
    whose rows are not known) the rows the request loaded from the tables the commit wrote.
    Runs before sessions.on_after_commit, which clears the record of the tables written."""
    written = session.info.pop(WRITTEN_KEY, None) or set()
    scope = m.watched()
    track = session.info.get(TRACK_KEY)
    tables = set(track.wrote["tables"]) if track is not None and track.wrote is not None else set()
    if scope is None or scope.kind != "request":
        return
    if tables:
        written |= {row for row in _loaded_rows(scope.serial) if row[0] in tables}
    if written:
        _committed_rows.setdefault(scope.serial, set()).update(written)


def on_after_rollback(m: "Monitor", session: Session) -> None:
    session.info.pop(WRITTEN_KEY, None)


def request_ended(m: "Monitor", scope: Any) -> None:
    """A request that committed rows and deleted no cache key: note its rows in each watched store."""
    committed = _committed_rows.pop(scope.serial, None)
    _loaded_keys.pop(scope.serial, None)
    _misses.pop(scope.serial, None)
    deleted_in = _deleters.pop(scope.serial, set())
    if not committed:
        return
    app = scope.app()
    for backend in list((app.extensions.get("cache") or {}).values()) if app is not None else ():
        if getattr(backend, WRAPPED, False) and id(backend) not in deleted_in:
            _note_deleted(backend.get, backend.set, scope, committed, [])


def wrap_caches(m: "Monitor", app: Any) -> None:
    """Wrap the backends of the app's Flask-Caching `Cache` objects (once each)."""
    for backend in list((app.extensions.get("cache") or {}).values()):
        if backend is None or getattr(backend, WRAPPED, False):
            continue
        try:
            _wrap(m, backend)
        except (AttributeError, TypeError):
            continue  # a backend that does not take attributes: not watched


def _wrap(m: "Monitor", backend: Any) -> None:
    get, set_, delete, delete_many = backend.get, backend.set, backend.delete, backend.delete_many

    def watched_get(key: Any, *args: Any, **kwargs: Any) -> Any:
        value = get(key, *args, **kwargs)
        if _ours(key):
            if value is not None:
                on_hit(m, get, key)
            else:
                on_miss(m, key)
        return value

    on_hit, on_miss = m.guard(_on_hit), m.guard(_on_miss)

    def watched_set(key: Any, value: Any, *args: Any, **kwargs: Any) -> Any:
        result = set_(key, value, *args, **kwargs)
        if _ours(key):
            m.guard(_on_set)(m, set_, key)
        return result

    def watched_delete(key: Any, *args: Any, **kwargs: Any) -> Any:
        result = delete(key, *args, **kwargs)
        if _ours(key):
            m.guard(_on_delete)(m, get, set_, [key])
        return result

    def watched_delete_many(*keys: Any, **kwargs: Any) -> Any:
        result = delete_many(*keys, **kwargs)
        mine = [key for key in keys if _ours(key)]
        if mine:
            m.guard(_on_delete)(m, get, set_, mine)
        return result

    backend.get, backend.set, backend.delete, backend.delete_many = (watched_get, watched_set, watched_delete,
                                                                      watched_delete_many)
    setattr(backend, WRAPPED, True)


def _ours(key: Any) -> bool:
    """The app's keys: not the doctor's notes, not cachelib's own (its FileSystemCache counter),
    not Flask-Caching's per-function version keys ("<function>_memver", shared by all its keys)."""
    return isinstance(key, str) and not key.startswith((PREFIX, "__wz_")) and not key.endswith("_memver")


def _request(m: "Monitor") -> Any:
    scope = m.watched()
    return scope if scope is not None and scope.kind == "request" else None


def _on_miss(m: "Monitor", key: str) -> None:
    scope = _request(m)
    if scope is not None:
        _misses.setdefault(scope.serial, {})[key] = len(_loaded_keys.get(scope.serial, ()))


def _on_set(m: "Monitor", set_: Callable[..., Any], key: str) -> None:
    scope = _request(m)
    if scope is None:
        return
    since = _misses.get(scope.serial, {}).pop(key, 0)  # what was loaded before the miss went into another value
    rows = sorted(_loaded_rows(scope.serial, since))
    if rows:
        set_(f"{PREFIX}set:{key}", {"at": time.time(), "rows": rows, "request": scope.label()}, timeout=NOTE_SECONDS)


def _on_delete(m: "Monitor", get: Callable[..., Any], set_: Callable[..., Any], keys: list[str]) -> None:
    scope = _request(m)
    if scope is None:
        return
    _deleters.setdefault(scope.serial, set()).add(id(getattr(get, "__self__", get)))  # the store it deleted in
    _note_deleted(get, set_, scope, _committed_rows.get(scope.serial, ()), keys)


def _note_deleted(get: Callable[..., Any], set_: Callable[..., Any], scope: Any, rows: Any, keys: list[str]) -> None:
    """Per row `scope` committed: when, and which keys it deleted (added to this request's earlier ones)."""
    for table, ident in sorted(rows):
        note_key = f"{PREFIX}deleted:{table}:{ident}"
        note = get(note_key)
        same = note is not None and note.get("serial") == (scope.pid, scope.serial)
        deleted = (list(note["keys"]) if same else []) + keys
        set_(note_key, {"at": time.time(), "keys": deleted, "request": scope.label(), "serial": (scope.pid, scope.serial)},
             timeout=NOTE_SECONDS)


def _on_hit(m: "Monitor", get: Callable[..., Any], key: str) -> None:
    scope = _request(m)
    if scope is None:
        return
    scope.data_cache_hit = True
    stored = get(f"{PREFIX}set:{key}")
    if not stored:
        return
    for table, ident in stored["rows"]:
        note = get(f"{PREFIX}deleted:{table}:{ident}")
        if note is None or note["at"] <= stored["at"] or key in note["keys"]:
            continue
        if not note["keys"]:
            m.emit("http_cache",
                   f"{scope.label()} was answered from cache key {key!r}, stored by {stored['request']} from {table} "
                   f"row {ident}; {note['request']} then committed a change to that row and deleted no cache key: "
                   f"nothing invalidates this cache, so it serves the row from before the commit until it expires",
                   f"viewcache@{scope.endpoint}", scope, location="", key_served=key, keys_deleted=[],
                   row=f"{table}:{ident}", stored_by=stored["request"], edited_by=note["request"])
            return
        deleted = ", ".join(repr(k) for k in note["keys"])
        m.emit("cache_key_mismatch",
               f"{scope.label()} was answered from cache key {key!r}, stored by {stored['request']} from {table} "
               f"row {ident}; {note['request']} then committed a change to that row and deleted {deleted}, "
               f"not this key: the edit's invalidation builds another key than the read",
               f"cachekey@{scope.endpoint}:{key}", scope, location="", key_served=key, keys_deleted=note["keys"],
               row=f"{table}:{ident}", stored_by=stored["request"], edited_by=note["request"])
        return
