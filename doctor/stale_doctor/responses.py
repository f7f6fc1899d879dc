"""Statements and responses: http_cache, browser_cache and offset_pagination.

Every statement a request runs is counted, and the tables its ORM reads are noted per URL. A
GET that answers without reading a table its URL read when it last built its answer, after this
process committed to that table, and read nothing but what every earlier request read (the
app's hooks: a log-in check, an audit entry), was served from a cache in the server:
http_cache. A page read differently (another user, another branch) reads tables of its own, so
it is no finding. A hit of an
answer nothing has changed since is no finding, and an answer from a Flask-Caching store the
doctor watches is judged row by row in datacache instead. Response headers are read (a
response built from tables that lets a browser or proxy reuse it unasked, or a validator
answered 304 after a table it read was written: browser_cache, a cache in the client), and
statements checked for OFFSET beyond the first page and for a locking read (FOR UPDATE, which
protects a later read-modify-write from lost_update, and after which identity_map checks the
objects written)."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from . import files
from .scopes import Scope
from .transactions import maybe_sweep

if TYPE_CHECKING:
    from .monitor import Monitor

_OFFSET = re.compile(r"\bOFFSET\s+(\S+)", re.IGNORECASE)
_MYSQL_LIMIT = re.compile(r"\bLIMIT\s+(\S+?)\s*,\s*\S+", re.IGNORECASE)
_NAMED = re.compile(r"^(?:%\((\w+)\)s|:(\w+))")


MAX_BUILT_PATHS = 256  # URLs per endpoint whose last build time is remembered (the oldest forgotten first)


@dataclass
class EndpointStats:
    runs_with_sql: int = 0
    tables: set[str] = field(default_factory=set)
    # URL (path and query) -> when it last built its answer from the database, and the tables it read
    built: dict[str, tuple[float, frozenset[str]]] = field(default_factory=dict)

    def note_built(self, path: str, tables: set[str]) -> None:
        self.built.pop(path, None)
        self.built[path] = (time.monotonic(), frozenset(tables))
        if len(self.built) > MAX_BUILT_PATHS:
            self.built.pop(next(iter(self.built)))


def offset_value(statement: str, parameters: Any) -> int | None:
    """The OFFSET of a SELECT (`OFFSET n`, or MySQL's `LIMIT n, m`), resolved from its parameters."""
    match = _OFFSET.search(statement) or _MYSQL_LIMIT.search(statement)
    if match is None:
        return None
    token = match.group(1).split("::")[0].rstrip(")")
    if token.isdigit():
        return int(token)
    named = _NAMED.match(token)
    try:
        if named and isinstance(parameters, Mapping):
            return int(parameters[named.group(1) or named.group(2)])
        if token in ("?", "%s") and isinstance(parameters, Sequence) and not isinstance(parameters, (str, bytes)):
            index = statement[:match.start(1)].count(token)
            return int(parameters[index])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return None


def on_cursor_execute(m: "Monitor", conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
                      executemany: bool) -> None:
    maybe_sweep(m)  # a job's transaction that no request or end will ever judge
    files.on_statement(m, conn)  # a SQLite connection held across requests: its file, once a second
    scope = m.watched()
    if scope is None:
        return
    scope.statements += 1
    head = statement.lstrip()[:6].upper()
    if head == "BEGIN " and statement.split()[1:2] in (["IMMEDIATE"], ["EXCLUSIVE"]):
        scope.locking_reads = True  # SQLite: the database's write lock for the whole transaction
    if head not in ("SELECT", "WITH"):
        return
    if "FOR UPDATE" in statement or "FOR SHARE" in statement or "LOCK IN SHARE MODE" in statement:
        scope.locking_reads = True
        if scope.selecting is not None:
            scope.locked_at[scope.selecting] = scope.statements
    if scope.kind != "request":
        return
    if "OFFSET" not in statement and not (conn.dialect.name in ("mysql", "mariadb") and _MYSQL_LIMIT.search(statement)):
        return
    offset = offset_value(statement, parameters)
    if offset:
        m.emit("offset_pagination",
               f"{scope.label()} reads a page with OFFSET {offset}: rows committed above it, or leaving the list, "
               f"since the previous page shift every row, so this page repeats or skips rows",
               f"offset@{scope.endpoint}", scope, offset=offset, sql=statement[:300])


MAX_VALIDATORS = 1024  # validators remembered per process (the oldest forgotten first)


def check_response(m: "Monitor", scope: Scope, response: Any) -> None:
    hooks = m.read_by_every_request  # what every earlier request read: the app's hooks (a log-in check)
    if scope.statements:
        read = frozenset(scope.tables_read)
        m.read_by_every_request = read if hooks is None else hooks & read
    if scope.method not in ("GET", "HEAD") or scope.endpoint is None:
        return
    if response.status_code == 304:
        _not_modified(m, scope, response)
        return
    if not 200 <= response.status_code < 300:
        return
    stats = m.endpoint_sql.setdefault(scope.endpoint, EndpointStats())
    if scope.statements:
        stats.runs_with_sql += 1
        stats.tables |= scope.tables_read
        _caching_headers(m, scope, response)
        _remember_validators(m, scope, response)
    built = stats.built.get(scope.path)
    only_hooks = scope.tables_read <= (hooks or frozenset())
    unread = _committed_unread(m, scope, built) if built is not None and only_hooks else []
    if not unread:
        if scope.tables_read and not (built is not None and only_hooks):
            stats.note_built(scope.path, scope.tables_read)  # built again (an answer of hooks alone keeps the last)
        return
    tables = sorted(built[1])  # type: ignore[index]
    how = ("without running a single SQL statement" if not scope.statements else
           f"reading none of {', '.join(unread)} (its {scope.statements} statement(s) read only "
           f"{', '.join(sorted(scope.tables_read)) or 'other things'}: the app's hooks, not the page)")
    m.emit("http_cache",
           f"{scope.label()} answered {response.status_code} {how}; {scope.path} last built its answer from "
           f"{', '.join(tables)} before this process committed to {', '.join(unread)}: the response came from a "
           f"cache in the server that the commit did not invalidate",
           f"viewcache@{scope.endpoint}", scope, location="", tables=tables, committed_since=unread,
           cache_control=response.headers.get("Cache-Control"))


def _committed_unread(m: "Monitor", scope: Scope, built: tuple[float, frozenset[str]]) -> list[str]:
    """Tables the URL read when it last built its answer, committed to by this process since, that
    this answer did not read: it was not built again from them. Nothing when a watched data cache
    answered (its notes say which rows it holds: datacache) or a session answered from its own
    identity map without a statement (the session checks judge that)."""
    if m.global_cache_seen or scope.data_cache_hit or (not scope.statements and scope.sessions):
        return []
    when, tables = built
    return sorted(t for t in tables if m.table_commits.get(t, 0.0) > when and t not in scope.tables_read)


def _caching_headers(m: "Monitor", scope: Scope, response: Any) -> None:
    control = response.cache_control
    if control.no_store or control.no_cache:
        return
    lets_cache = (control.max_age or 0) > 0 or (control.s_maxage or 0) > 0 or control.public or (
        response.expires is not None and response.expires.timestamp() > time.time())
    if not lets_cache:
        return
    tables = sorted(scope.tables_read)
    m.emit("browser_cache",
           f"{scope.label()} read {', '.join(tables) or 'the database'} and answered with "
           f"Cache-Control: {response.headers.get('Cache-Control') or '-'}"
           f"{' and Expires' if response.expires else ''}: a browser or proxy may reuse this response without "
           f"asking, and show it after the data changed",
           f"headers@{scope.endpoint}", scope, location="", tables=tables,
           cache_control=response.headers.get("Cache-Control"), expires=response.headers.get("Expires"))


def _validators(response: Any) -> list[str]:
    tag, _weak = response.get_etag()
    tags = [f"etag:{tag}"] if tag else []
    return tags + ([f"last-modified:{response.headers['Last-Modified']}"] if response.headers.get("Last-Modified") else [])


def _remember_validators(m: "Monitor", scope: Scope, response: Any) -> None:
    """A 2xx built from tables with an ETag or Last-Modified: when it was issued, and from what."""
    for tag in _validators(response):
        m.validators_issued.pop((scope.endpoint, tag), None)
        m.validators_issued[(scope.endpoint, tag)] = (time.monotonic(), sorted(scope.tables_read))
    while len(m.validators_issued) > MAX_VALIDATORS:
        m.validators_issued.pop(next(iter(m.validators_issued)))


def _not_modified(m: "Monitor", scope: Scope, response: Any) -> None:
    """A 304 for a validator this process issued with a response built from tables, when a table
    it read was committed to since: the client keeps showing the rows from before the write."""
    from flask import request

    asked = [f"etag:{tag}" for tag in request.if_none_match.as_set(include_weak=True)]
    if request.headers.get("If-Modified-Since"):
        asked.append(f"last-modified:{request.headers['If-Modified-Since']}")
    for tag in asked:
        issued = m.validators_issued.get((scope.endpoint, tag))
        if issued is None:
            continue
        issued_at, tables = issued
        written = [t for t in tables if m.table_commits.get(t, 0.0) > issued_at]
        if written:
            m.emit("browser_cache",
                   f"{scope.label()} answered 304 Not Modified to {tag.split(':', 1)[0]} {tag.split(':', 1)[1]}, "
                   f"issued with a response that read {', '.join(tables)}; this process committed to "
                   f"{', '.join(written)} since: the client keeps showing the rows from before that write "
                   f"(the validator is not derived from what changed)",
                   f"notmodified@{scope.endpoint}", scope, location="", tables=tables, written=written,
                   validator=tag, cache_control=response.headers.get("Cache-Control"))
            return
