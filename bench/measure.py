"""Timing one page request four ways, and counting its SQL statements.

- in process: the fixed app's `/api/transactions` through Flask's test client (routing,
  parsing, session, ORM, JSON: everything but the network);
- HTTP: the same request to the same app under gunicorn (one sync worker) on 127.0.0.1, a new
  connection per request;
- the floor: the very statements the app sent for that request (captured with their
  parameters) run on a plain DBAPI connection of an identically configured engine, every row
  fetched, then rolled back as the app's session does: what the database and driver cost;
- OFFSET: the same page reached with `?page=N` (lab.queries.list_page_offset), in process.
Samples are taken in rounds over every page of a case and every way of asking (floor, in
process, HTTP for page 1, then for page 100, ..., then again), so a burst of load from
elsewhere on the machine hits them alike.
"""

from __future__ import annotations

import functools
import http.client
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator
from urllib.parse import urlencode

from flask.testing import FlaskClient
from sqlalchemy import Engine, event
from werkzeug.datastructures import MultiDict

from bench import floor as floor_json
from bench.explain import Statement

KEYSET_PATH = "/api/transactions"
HTML_PATH = "/transactions"
OFFSET_PATH = "/bench/offset-transactions"
Encoder = Callable[[list[floor_json.Result]], bytes]


def percentile(values: list[float], share: float) -> float:
    """Nearest-rank percentile (p50 of 30 samples is the 15th smallest)."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * share // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]


@dataclass
class Samples:
    ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.ms, 0.50)

    @property
    def p95(self) -> float:
        return percentile(self.ms, 0.95)

    def summary(self) -> dict[str, Any]:
        return {"n": len(self.ms), "p50_ms": round(self.p50, 3), "p95_ms": round(self.p95, 3),
                "min_ms": round(min(self.ms), 3), "max_ms": round(max(self.ms), 3)}


@dataclass
class Budget:
    """How many samples to take: `repeat`, or fewer (never under `minimum`) once `seconds` pass."""

    repeat: int = 30
    minimum: int = 5
    seconds: float = 10.0
    warmup: int = 2


class StatementCounter:
    """Counts what the engine sends: cursor executions (SQL) and pool pre-pings.

    A pre-ping is not a query of the page, but on PostgreSQL it is a `SELECT 1` round trip
    (MariaDB's PyMySQL pings at protocol level), so it is counted and shown on its own.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.statements: list[str] = []
        self.pings = 0
        self._original_ping = engine.dialect.do_ping

    def _record(self, _conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        self.statements.append(statement.split(None, 1)[0].upper())

    def _ping(self, dbapi_connection: Any) -> bool:
        self.pings += 1
        return self._original_ping(dbapi_connection)

    @contextmanager
    def counting(self) -> Iterator["StatementCounter"]:
        self.statements, self.pings = [], 0
        event.listen(self.engine, "before_cursor_execute", self._record)
        self.engine.dialect.do_ping = self._ping  # type: ignore[method-assign]
        try:
            yield self
        finally:
            event.remove(self.engine, "before_cursor_execute", self._record)
            del self.engine.dialect.do_ping  # back to the class's method


def capture(engine: Engine, request: Callable[[], Any]) -> list[Statement]:
    """The statements (with DBAPI parameters) one request sends, in order."""
    seen: list[Statement] = []

    def _record(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_args: Any) -> None:
        seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", _record)
    try:
        request()
    finally:
        event.remove(engine, "before_cursor_execute", _record)
    return seen


class Floor:
    """Replays captured statements on a plain DBAPI connection (no ORM, no Flask) and encodes
    the response's data from the driver's rows (bench/floor.py)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connection = engine.raw_connection()  # same connect-time settings as the app's

    def run(self, statements: list[Statement], encode: Encoder | None = None) -> tuple[float, list[float], bytes]:
        """Milliseconds in all (the closing rollback and the encoding included, as the app's
        session ends with one and the app encodes its answer), per statement, and the body."""
        timings = []
        results: list[floor_json.Result] = []
        begun = time.perf_counter()
        cursor = self.connection.cursor()
        try:
            for sql, parameters in statements:
                started = time.perf_counter()
                cursor.execute(sql, parameters)
                if cursor.description is not None:
                    results.append((sql, [column[0] for column in cursor.description], cursor.fetchall()))
                else:
                    results.append((sql, (), ()))
                timings.append(1000 * (time.perf_counter() - started))
        finally:
            cursor.close()
            self.connection.rollback()
        body = encode(results) if encode is not None else b""
        return 1000 * (time.perf_counter() - begun), timings, body

    def close(self) -> None:
        self.connection.close()


def http_get(port: int, path: str, query: MultiDict[str, str]) -> tuple[int, bytes]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.request("GET", f"{path}?{urlencode(list(query.items(multi=True)))}",
                           headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def in_process(client: FlaskClient, path: str, query: MultiDict[str, str]) -> Any:
    """One request through Flask's test client; the response (its body is not parsed: the
    timed calls must not count the benchmark's own JSON decoding as the app's time)."""
    response = client.get(path, query_string=query)
    if response.status_code != 200:
        raise RuntimeError(f"{path}?{urlencode(list(query.items(multi=True)))}: {response.status_code} {response.text[:300]}")
    return response


def timed(call: Callable[[], Any]) -> float:
    started = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - started)


def timed_with_cpu(call: Callable[[], Any]) -> tuple[float, float]:
    """Wall and CPU milliseconds of this process. CPU time is what the app itself costs; it
    hardly grows when other processes crowd the machine, wall time does (it waits its turn)."""
    wall, cpu = time.perf_counter(), time.process_time()
    call()
    return 1000 * (time.perf_counter() - wall), 1000 * (time.process_time() - cpu)


@dataclass
class Target:
    """One position to measure: the keyset request, and the same page by OFFSET."""

    keyset_query: MultiDict[str, str]
    offset_query: MultiDict[str, str] | None


@dataclass
class PositionResult:
    floor: Samples = field(default_factory=Samples)  # the JSON page's statements + its encoding
    floor_count: Samples = field(default_factory=Samples)  # the last statement alone: the capped count
    in_process: Samples = field(default_factory=Samples)
    in_process_cpu: Samples = field(default_factory=Samples)
    html_floor: Samples = field(default_factory=Samples)  # the HTML page's statements + its data as JSON
    html: Samples = field(default_factory=Samples)  # the HTML page in process
    http: Samples | None = None
    offset: Samples | None = None
    offset_error: str | None = None  # why OFFSET has no figure (e.g. it hit the app's statement timeout)
    statements: list[str] = field(default_factory=list)  # first word of each statement of one request
    html_statements: list[str] = field(default_factory=list)
    pings: int = 0
    offset_statements: list[str] = field(default_factory=list)
    rows: int = 0
    next_cursor: bool = False
    json_bytes: int = 0
    html_bytes: int = 0
    floor_matches_app: bool = False  # the floor's JSON is the app's body, byte for byte


def measure_case(client: FlaskClient, floor: Floor, counter: StatementCounter, targets: list[Target],
                 http_port: int | None, budget: Budget) -> list[PositionResult]:
    """All measurements of the pages of one case.

    Keyset figures are taken in rounds over every page of the case and every way of asking
    (floor, in process, HTML floor, HTML, HTTP), so the first and the 10,000th page are
    measured under the same conditions and their ratio is not an artefact of a burst of load
    elsewhere.
    """
    results, replays, html_replays, encoders = [], [], [], []
    for target in targets:
        result = PositionResult(http=Samples() if http_port is not None else None)
        with counter.counting():
            response = in_process(client, KEYSET_PATH, target.keyset_query)
        body = response.get_json()
        result.statements, result.pings = list(counter.statements), counter.pings
        result.rows, result.next_cursor = len(body["items"]), body["next_cursor"] is not None
        result.json_bytes = len(response.data)
        with counter.counting():
            result.html_bytes = len(in_process(client, HTML_PATH, target.keyset_query).data)
        result.html_statements = list(counter.statements)
        replay = capture(counter.engine, lambda: in_process(client, KEYSET_PATH, target.keyset_query))
        encoders.append((functools.partial(floor_json.json_page, limit=body["limit"]),
                         functools.partial(floor_json.html_page_data, limit=body["limit"])))
        result.floor_matches_app = floor.run(replay, encoders[-1][0])[2] == response.data
        replays.append(replay)
        html_replays.append(capture(counter.engine, lambda: in_process(client, HTML_PATH, target.keyset_query)))
        results.append(result)

    def one_round(record: bool) -> None:
        for target, replay, html_replay, (encode, encode_html), result in zip(
                targets, replays, html_replays, encoders, results):
            total, per_statement, _ = floor.run(replay, encode)
            wall, cpu = timed_with_cpu(lambda: in_process(client, KEYSET_PATH, target.keyset_query))
            html_total = floor.run(html_replay, encode_html)[0]
            html = timed(lambda: in_process(client, HTML_PATH, target.keyset_query))
            http = timed(lambda: _check_http(http_port, target.keyset_query)) if http_port is not None else None
            if record:
                result.floor.ms.append(total)
                result.floor_count.ms.append(per_statement[-1])
                result.in_process.ms.append(wall)
                result.in_process_cpu.ms.append(cpu)
                result.html_floor.ms.append(html_total)
                result.html.ms.append(html)
                if result.http is not None and http is not None:
                    result.http.ms.append(http)

    for _ in range(budget.warmup):
        one_round(record=False)
    started = time.perf_counter()
    for done in range(budget.repeat):
        if done >= budget.minimum and time.perf_counter() - started > budget.seconds * len(targets):
            break
        one_round(record=True)

    for target, result in zip(targets, results):
        if target.offset_query is not None:
            _measure_offset(client, counter, target.offset_query, result, budget)
    return results


def _check_http(port: int | None, query: MultiDict[str, str]) -> None:
    assert port is not None
    status, payload = http_get(port, KEYSET_PATH, query)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {payload[:300]!r}")


def _measure_offset(client: FlaskClient, counter: StatementCounter, query: MultiDict[str, str],
                    result: PositionResult, budget: Budget) -> None:
    """The same page by OFFSET, in process (deep ones are slow: the time budget stops them)."""
    try:
        with counter.counting():
            in_process(client, OFFSET_PATH, query)
        result.offset_statements = list(counter.statements)
        samples = Samples()
        started = time.perf_counter()
        for done in range(budget.repeat):
            if done >= budget.minimum and time.perf_counter() - started > budget.seconds:
                break
            samples.ms.append(timed(lambda: in_process(client, OFFSET_PATH, query)))
        result.offset = samples
    except RuntimeError as error:  # e.g. the app's statement timeout: the figure is "failed"
        result.offset_error = str(error).splitlines()[0][:300]
