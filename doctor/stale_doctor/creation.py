"""import_time: values the app computed once, at import or while it was being created.

Two shapes, both seen where the value is used, never guessed from the source:
- a table read while the app was created (an app context pushed outside any request, before
  the app's first request in this process, from the app's own code): whatever was built from
  it (a form's choices, a lookup dict) is frozen. Reported when a request writes to that table,
  the moment the frozen copy stops being true.
- a column default that is a value, not a function: `default=datetime.now(timezone.utc)` calls
  now() once, when the model is imported, and SQLAlchemy gives that value to every row. Seen at
  the first insert that used it: a constant datetime/date default (`ColumnDefault.is_scalar`),
  or a datetime the default produced that is older than the app itself, or equal to the one
  it gave the previous new row (a default computed once, however it is wrapped).
"""

from __future__ import annotations

import datetime as dt
import sys
from typing import TYPE_CHECKING, Any

from sqlalchemy import inspect
from sqlalchemy.sql.expression import TableClause

from .evidence import user_frame

if TYPE_CHECKING:
    from .monitor import Monitor

DEFAULTED_KEY = "stale_doctor.defaulted"


def _in_app_code(location: str | None, packages: tuple[str, ...]) -> bool:
    return bool(location) and location.split(":")[0].split(".")[0] in packages  # type: ignore[union-attr]


def outermost_app_frame(packages: tuple[str, ...], depth_limit: int = 80) -> str | None:
    """The outermost frame in the app's packages: for a read at creation, the factory that ran it."""
    frame, found, depth = sys._getframe(1), None, 0
    while frame is not None and depth < depth_limit:
        module = frame.f_globals.get("__name__", "")
        if module.split(".")[0] in packages:
            found = f"{module}:{frame.f_lineno} in {frame.f_code.co_name}"
        frame, depth = frame.f_back, depth + 1
    return found


def on_orm_execute(m: "Monitor", orm_state: Any) -> None:
    scope = m.watched()
    if scope is None:
        return
    if orm_state.is_select:
        app = scope.app()
        if scope.kind != "job" or not scope.placeholder or app is None or id(app) in m.serving_apps:
            return
        settings = m.settings_for(scope)
        location = user_frame(settings.app_packages) if settings else None
        if settings is None or not _in_app_code(location, settings.app_packages):
            return
        outer = outermost_app_frame(settings.app_packages)
        if outer and outer != location:
            location = f"{location}, called from {outer}"
        for table_name in _tables_selected(orm_state):
            m.creation_reads.setdefault(table_name, {
                "location": location, "app": app.import_name, "pid": scope.pid,
                "at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="microseconds")})
    elif orm_state.is_insert or orm_state.is_update or orm_state.is_delete:
        tables = {mp.local_table.name for mp in orm_state.all_mappers if hasattr(mp, "local_table")}
        verb = "INSERT" if orm_state.is_insert else "UPDATE" if orm_state.is_update else "DELETE"
        check_write(m, scope, tables, verb)


def _tables_selected(orm_state: Any) -> list[str]:
    """The tables a SELECT run through a Session reads: its entities' tables, or for a Core
    `table.select()` given to `session.execute`, the tables in its FROM clause."""
    names = [mp.local_table.name for mp in orm_state.all_mappers if getattr(mp, "local_table", None) is not None]
    if names:
        return names
    statement = orm_state.statement
    froms = statement.get_final_froms() if hasattr(statement, "get_final_froms") else getattr(statement, "froms", [])
    return [t.name for t in froms if isinstance(t, TableClause)]


def check_write(m: "Monitor", scope: Any, tables: set[str], verb: str) -> None:
    """A request writes to a table the app read while it was being created: report it once."""
    if scope is None or scope.kind != "request" or not m.creation_reads:
        return
    for table in sorted(tables & set(m.creation_reads)):
        read = m.creation_reads[table]
        m.emit("import_time",
               f"{scope.label()} runs {verb} on {table}, which the app read while it was being created "
               f"({read['location']}, at {read['at']}, before its first request): whatever was built from that "
               f"read (form choices, a lookup) was computed once and never shows this change",
               f"creation-read@{table}", scope, tables=[table], read_at_creation=read)


def on_before_flush(m: "Monitor", session: Any) -> None:
    """Note, per new object, the columns its Python-side defaults will fill."""
    scope = m.watched()
    if scope is None or not session.new:
        return
    for obj in list(session.new):
        state = inspect(obj)
        defaulted = []
        for prop in state.mapper.column_attrs:
            column = prop.columns[0]
            default = getattr(column, "default", None)
            if default is None or getattr(default, "is_sequence", False) or getattr(default, "is_clause_element", False):
                continue
            if state.dict.get(prop.key) is not None:
                continue  # set by the code: not the default's value
            defaulted.append((prop.key, column.table.name, column.name))
            if getattr(default, "is_scalar", False) and isinstance(default.arg, (dt.datetime, dt.date)):
                m.emit("import_time",
                       f"{column.table.name}.{column.name}'s default is the constant {default.arg.isoformat()}, not a "
                       f"callable: it was computed once (e.g. `default=datetime.now(...)` at import), so every new "
                       f"row gets that time; pass the function (`default=utc_now`) or `server_default=func.now()`",
                       f"constant-default@{column.table.name}.{column.name}", scope,
                       models=(state.mapper.class_.__name__,), column=f"{column.table.name}.{column.name}",
                       value=default.arg.isoformat())
        if defaulted:
            state.info[DEFAULTED_KEY] = defaulted


def on_after_flush(m: "Monitor", session: Any) -> None:
    """Compare the times the defaults gave with the app's creation and with the last new row's."""
    scope = m.watched()
    new = list(session.new)
    if new and scope is not None:
        check_write(m, scope, {inspect(o).mapper.local_table.name for o in new}, "INSERT")
    changed = [*session.dirty, *session.deleted]
    if changed and scope is not None:
        check_write(m, scope, {inspect(o).mapper.local_table.name for o in changed}, "UPDATE/DELETE")
    for obj in new:
        state = inspect(obj)
        defaulted = state.info.pop(DEFAULTED_KEY, None)
        if not defaulted or scope is None:
            continue
        identity = tuple(state.mapper.primary_key_from_instance(obj))  # state.key is set after this event
        app_state = m.state_for(scope.app())
        for key, table, column in defaulted:
            value = state.dict.get(key)
            if not isinstance(value, dt.datetime):
                continue
            name = f"{table}.{column}"
            previous = m.default_values.get(name)
            m.default_values[name] = (value, identity)
            created = app_state.created if app_state is not None else None
            older = created is not None and _before(value, created)
            repeated = previous is not None and previous[0] == value and previous[1] != identity
            if not (older or repeated):
                continue
            why = (f"older than the app itself (created {created.isoformat()})" if older and created else
                   f"the very value its default gave the previous new row {previous[1] if previous else ''}")
            m.emit("import_time",
                   f"a new {table} row {identity} got {column} = {value.isoformat()} from its column default, "
                   f"{why}: the default is a value computed once (at import), not called per row, so every new "
                   f"row gets that time",
                   f"default@{name}", scope, models=(state.mapper.class_.__name__,), column=name,
                   value=value.isoformat(), app_created=created.isoformat() if created else None)


def _before(value: dt.datetime, created: dt.datetime) -> bool:
    if value.tzinfo is not None:
        return value < created
    # A naive time may be local or UTC: older than the app in both readings.
    local = created.astimezone().replace(tzinfo=None)
    return value < min(local, created.replace(tzinfo=None))


def note_request(m: "Monitor", app: Any) -> None:
    m.serving_apps.add(id(app))

