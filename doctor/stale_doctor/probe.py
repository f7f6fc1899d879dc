"""`flask stale-doctor probe`: which layer is stale, for one row.

Side by side: the row read on a new connection (the truth), what the app serves at a URL, and,
from inside the worker that served it (the app must run with STALE_DOCTOR_PROBE on, and only
answers the probe from 127.0.0.1): the sessions that request used, what each one's identity
map holds for the row, what its open transaction reads, the statements the request ran, and
ORM objects of that row held outside any session. The layer that differs is named: database
snapshot, identity map, cache (objects or data kept by the app), response cache (the view
did not run).
"""

from __future__ import annotations

import gc
import json
import re
import urllib.request
from dataclasses import dataclass
from typing import Any

from flask import Flask, Response, request
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.pool import NullPool

from .scopes import current

PROBE_HEADER = "X-Stale-Doctor-Probe"
LAYERS_HEADER = "X-Stale-Doctor-Layers"
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOOPBACK = ("127.0.0.1", "::1")


def parse_target(value: str) -> tuple[str, str, str]:
    table, row_id, column = (value.split(":") + ["", ""])[:3]
    if not (_IDENT.match(table) and _IDENT.match(column or "x") and row_id):
        raise ValueError(f"probe target must be table:id:column, not {value!r}")
    return table, row_id, column or "version"


def _matches(obj: Any, table: str, row_id: str) -> Any:
    state = inspect(obj, raiseerr=False)
    if state is None or not hasattr(state, "mapper") or state.mapper.local_table.name != table:
        return None
    identity = state.identity or ()
    return state if len(identity) == 1 and str(identity[0]) == row_id else None


def layers(sessions: list[Any], statements: int, table: str, row_id: str, column: str) -> dict[str, Any]:
    """What this worker holds for one row, computed inside the request that served it."""
    found: list[dict[str, Any]] = []
    seen_objects = set()
    for session in sessions:
        track = session.info.get("stale_doctor")
        entry: dict[str, Any] = {"session": getattr(track, "token", hex(id(session))),
                                 "in_transaction": session.in_transaction()}
        for obj in list(session.identity_map.values()):
            state = _matches(obj, table, row_id)
            if state is not None:
                entry["identity_map"] = _plain(state.dict.get(column))
                seen_objects.add(id(obj))
        if session.in_transaction():
            pk = _pk_column(session, table)
            value = session.execute(text(f"SELECT {column} FROM {table} WHERE {pk} = :row_id"),
                                    {"row_id": int(row_id) if row_id.isdigit() else row_id}).scalar()
            entry["snapshot"] = _plain(value)
            tx = getattr(track, "tx", None)
            if tx is not None:
                entry.update(transaction_age_seconds=round(tx.age(), 3), isolation_level=tx.isolation)
        found.append(entry)
    held = []
    for obj in gc.get_objects():
        if id(obj) in seen_objects or not hasattr(type(obj), "__mapper__"):
            continue
        state = _matches(obj, table, row_id)
        if state is not None:
            stamp = state.info.get("stale_doctor")
            held.append({"value": _plain(state.dict.get(column)), "detached": state.detached,
                         "loaded_by": stamp[2] if stamp else None})
    return {"statements": statements, "sessions": found, "held_objects": held[:5]}


def _pk_column(session: Any, table: str) -> str:
    for mapper in session.registry.mappers if hasattr(session, "registry") else ():
        if mapper.local_table.name == table:
            return str(mapper.primary_key[0].name)
    return "id"


def _plain(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool, type(None))) else str(value)


def install_hook(app: Flask) -> None:
    @app.after_request
    def _probe_layers(response: Response) -> Response:
        target = request.headers.get(PROBE_HEADER)
        scope = current.get()
        if not target or scope is None or request.remote_addr not in LOOPBACK:
            return response
        try:
            table, row_id, column = parse_target(target)
            data = layers(scope.live_sessions(), scope.statements, table, row_id, column)
        except Exception as error:  # the probe must not break the page it probes
            data = {"error": f"{type(error).__name__}: {error}"}
        data["pid"], data["request"] = scope.pid, scope.label()
        response.headers[LAYERS_HEADER] = json.dumps(data, default=str)
        return response


@dataclass
class ProbeResult:
    fresh: Any
    served: Any
    inside: dict[str, Any] | None
    stale_layer: str
    explanation: str

    def lines(self, table: str, row_id: str, column: str, url: str) -> list[str]:
        rows = [("database, read on a new connection", self.fresh, "the truth")]
        inside = self.inside or {}
        for entry in inside.get("sessions", []):
            if "identity_map" in entry:
                rows.append((f"identity map of {entry['session']}", entry["identity_map"], "what the ORM object holds"))
            if "snapshot" in entry:
                rows.append((f"open transaction of {entry['session']}", entry["snapshot"],
                             f"{entry.get('transaction_age_seconds', '?')} s old, {entry.get('isolation_level', '?')}"))
        for held in inside.get("held_objects", []):
            rows.append(("ORM object held outside any session", held["value"], f"loaded by {held.get('loaded_by')}"))
        if self.inside is not None:
            rows.append((f"statements run by {inside.get('request')}", inside.get("statements"), f"pid {inside.get('pid')}"))
        rows.append((f"served by GET {url}", self.served, ""))
        width = max(len(r[0]) for r in rows)
        out = [f"probe {table} {row_id}, column {column}:"]
        out += [f"  {name:<{width}}  {value!s:<12} {note}" for name, value, note in rows]
        out.append(f"stale layer: {self.stale_layer}")
        out.append(f"  {self.explanation}")
        return out


def fresh_value(url: Any, table: str, row_id: str, column: str) -> Any:
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            pk = "id"
            return _plain(conn.execute(text(f"SELECT {column} FROM {table} WHERE {pk} = :row_id"),
                                       {"row_id": int(row_id) if row_id.isdigit() else row_id}).scalar())
    finally:
        engine.dispose()


def served_value(body: bytes, content_type: str, row_id: str, column: str) -> Any:
    if "json" in content_type:
        return _find_in_json(json.loads(body), row_id, column)
    html = body.decode("utf-8", "replace")
    for tag in re.finditer(r"<[^>]*\bdata-id=\"" + re.escape(row_id) + r"\"[^>]*>", html):
        value = re.search(r"\bdata-" + re.escape(column) + r"=\"([^\"]*)\"", tag.group(0))
        if value:
            return int(value.group(1)) if value.group(1).isdigit() else value.group(1)
    return None


def _find_in_json(data: Any, row_id: str, column: str) -> Any:
    if isinstance(data, dict):
        if str(data.get("id")) == row_id and column in data:
            return data[column]
        values = data.values()
    elif isinstance(data, list):
        values = data
    else:
        return None
    for value in values:
        found = _find_in_json(value, row_id, column)
        if found is not None:
            return found
    return None


def judge(fresh: Any, served: Any, inside: dict[str, Any] | None) -> tuple[str, str]:
    if served is None:
        return "unknown", "the row is not on the page served at that URL: give a URL that shows it"
    if str(served) == str(fresh):
        return "none", "the page shows what the database holds: every layer agrees"
    if inside is None or "error" in inside:
        return ("between the database and the page",
                "run the app with STALE_DOCTOR_PROBE=1 (and the doctor installed) to name the layer"
                + (f" ({inside['error']})" if inside else ""))
    sessions = inside.get("sessions", [])
    held = [h for h in inside.get("held_objects", []) if str(h["value"]) != str(fresh)]
    if any("snapshot" in s and str(s["snapshot"]) != str(fresh) for s in sessions):
        return "database snapshot", ("the request's session reads through a transaction begun before the last "
                                     "commit: end transactions with the request (long_transaction, scoped_session_*)")
    if any("identity_map" in s and str(s["identity_map"]) != str(fresh) for s in sessions):
        return "identity map", ("the session returns the object it already holds with its old attributes: "
                                "a session kept across requests, or a re-read without populate_existing")
    if held:
        return "cache", (f"the app keeps ORM objects outside any session (loaded by {held[0].get('loaded_by')}) "
                         f"and serves them: global_cache")
    if not inside.get("statements"):
        return "response cache", ("the request ran no SQL at all: the response came from a view cache "
                                  "(http_cache)")
    return "cache", "the view read the database, yet serves other data: an app-level cache of data (not of objects)"


def probe(app: Flask, url_of_db: Any, table: str, row_id: str, column: str, url: str) -> ProbeResult:
    fresh = fresh_value(url_of_db, table, row_id, column)
    req = urllib.request.Request(url, headers={PROBE_HEADER: f"{table}:{row_id}:{column}"})
    with urllib.request.urlopen(req, timeout=15) as response:  # noqa: S310 (a URL the user gives)
        body = response.read()
        content_type = response.headers.get("Content-Type", "")
        layers_header = response.headers.get(LAYERS_HEADER)
    served = served_value(body, content_type, row_id, column)
    inside = json.loads(layers_header) if layers_header else None
    layer, why = judge(fresh, served, inside)
    return ProbeResult(fresh, served, inside, layer, why)
