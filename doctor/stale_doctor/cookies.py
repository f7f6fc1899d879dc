"""Database values copied into Flask's cookie session: session_cookie_snapshot.

Flask's default session is a signed cookie: whatever a request stores there, the browser
sends back on every later request, and nothing on the server can change it until the app
writes the key again. An app that stores ids the user chose is fine; one that stores the
*values* those ids stand for (a display name, a role, a default setting) shows them as they
were when copied, whatever the database says since: a rename, a grant from the CLI.

The doctor notes the text values of the rows each request loads (`InstanceEvents.load`,
text columns that are neither primary nor foreign keys, a bounded number per request, copied:
no reference to the object is kept), and when the request ends with its cookie session
modified (`session.modified`, at `request_finished`, after every `after_request`), looks for
those values among what the session holds. A value the request itself sent (a form field, a
query argument, a JSON string) is the user's, not a copy, and is not counted; nor are keys
that start with "_" (Flask-Login's `_user_id`, Flask's `_flashes`) or `csrf_token`.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING, Any, Callable, Iterator

import flask
from sqlalchemy import String, Text
from sqlalchemy.orm import InstanceState, Mapper

from .scopes import Scope, current

if TYPE_CHECKING:
    from .monitor import Monitor

MAX_VALUES_PER_REQUEST = 2_000  # text values noted per request; a big page stops noting, never slows
MIN_LENGTH = 3  # "a", "in", "10" are too common to mean a copy
MAX_LEAVES = 500  # values looked at in one session
MAX_DEPTH = 6
SKIPPED_KEYS = ("csrf_token",)

_TEXT_COLUMNS: "weakref.WeakKeyDictionary[Mapper[Any], tuple[tuple[str, str], ...]]" = weakref.WeakKeyDictionary()


def _text_columns(mapper: Mapper[Any]) -> tuple[tuple[str, str], ...]:
    """(attribute key, "table.column") of the mapper's text columns that are no key."""
    found = _TEXT_COLUMNS.get(mapper)
    if found is None:
        pairs = []
        for prop in mapper.column_attrs:
            column = prop.columns[0]
            if getattr(column, "table", None) is None or column.primary_key or column.foreign_keys:
                continue
            if isinstance(column.type, (String, Text)):
                pairs.append((prop.key, f"{column.table.name}.{column.name}"))
        found = _TEXT_COLUMNS[mapper] = tuple(pairs)
    return found


def load_listener(m: "Monitor") -> Callable[..., None]:
    get_scope = current.get

    def on_load(state: InstanceState[Any], context: Any, *_keys: Any) -> None:
        # A shallow copy of the row's attributes, as loaded (the object itself may be gone by the
        # end of the request): its text values are looked for only when the request has
        # modified the cookie session, which few requests do.
        try:
            scope = get_scope()
            if scope is not None and scope.kind == "request" and len(scope.loaded_states) < MAX_VALUES_PER_REQUEST:
                scope.loaded_states.append((state.mapper, state.key, state.dict.copy()))
        except Exception:
            m.internal_error("cookies.on_load")

    return on_load


def loaded_text(scope: Scope) -> dict[str, tuple[str, Any, str]]:
    """text -> (table.column, row key, model) of the text values the request's rows held as loaded."""
    found: dict[str, tuple[str, Any, str]] = {}
    for mapper, identity_key, values in scope.loaded_states:
        row = identity_key[1] if identity_key is not None else ()
        for key, column in _text_columns(mapper):
            value = values.get(key)
            if type(value) is str and len(value) >= MIN_LENGTH:
                found.setdefault(value, (column, row, mapper.class_.__name__))
    return found


def _leaves(value: Any, path: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """(path, text) of the strings in a session value: dicts, lists and tuples walked."""
    if isinstance(value, str):
        yield path, value
    elif depth < MAX_DEPTH and isinstance(value, dict):
        for key, item in value.items():
            yield from _leaves(item, f"{path}[{key!r}]", depth + 1)
    elif depth < MAX_DEPTH and isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]", depth + 1)


def _sent_by_the_user() -> set[str]:
    request = flask.request
    sent = {v for _, v in request.values.items(multi=True)}
    if request.is_json:
        sent.update(text for _, text in _leaves(request.get_json(silent=True), ""))
    return sent


def check_session(m: "Monitor", scope: Scope) -> None:
    """At request_finished: did this request write database values into the cookie session?"""
    if not scope.loaded_states:
        return
    session = flask.session
    if not getattr(session, "modified", False):
        return
    loaded = loaded_text(scope)
    sent: set[str] | None = None
    copies: dict[str, list[tuple[str, str, str, Any, str]]] = {}  # key -> (path, value, column, row, model)
    looked = 0
    for key in list(session.keys()):
        if not isinstance(key, str) or key.startswith("_") or key in SKIPPED_KEYS:
            continue
        for path, text in _leaves(session[key], f"session[{key!r}]"):
            looked += 1
            if looked > MAX_LEAVES:
                break
            origin = loaded.get(text)
            if origin is None:
                continue
            if sent is None:
                sent = _sent_by_the_user()
            if text not in sent:
                copies.setdefault(key, []).append((path, text, *origin))
    for key, found in copies.items():
        path, text, column, row, _model = found[0]
        columns = sorted({c for _, _, c, _, _ in found})
        more = f" (and {len(found) - 1} more value(s) of {', '.join(columns)})" if len(found) > 1 else ""
        row_text = f" of row {', '.join(map(str, row))}" if row else ""
        m.emit("session_cookie_snapshot",
               f"{scope.label()} stored {column} {text!r}{row_text}, loaded from the database in this request, in "
               f"Flask's cookie session ({path}){more}: the browser sends this copy back on every request, and a "
               f"change in the database never reaches it; store the id and read the value per request",
               f"cookie@{scope.endpoint}:{key}", scope, models=tuple(sorted({f[4] for f in found})),
               session_key=key, columns=columns, values=[{"path": p, "value": v[:100], "column": c, "row": list(r)}
                                                         for p, v, c, r, _ in found[:10]])
