"""Show the database's plan for the statements the transactions page really issues.

`python -m bench.explain --db postgresql --case "one wallet" --depth 100` captures the SQL of
one `queries.list_page` call (the page and the capped count, with their parameters, as the
driver receives them) and runs it under the backend's own explain:
PostgreSQL `EXPLAIN (ANALYZE, BUFFERS)`, MariaDB `ANALYZE` (the plan with real row counts),
SQLite `EXPLAIN QUERY PLAN`. bench/indexes.py measures lab/INDEXES.md's plans with it.
"""

from __future__ import annotations

import argparse
import re
import time
from contextlib import contextmanager
from typing import Any, Iterator

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bench import cases, dataset
from lab import databases, queries, web
from lab.engine import backend_of

Statement = tuple[str, Any]


@contextmanager
def captured(engine: Engine, dry_run: bool = False) -> Iterator[list[Statement]]:
    """Every statement the engine sends while the block runs, with its DBAPI parameters.

    With `dry_run`, each SELECT is sent as `SELECT * FROM (<it>) AS q LIMIT 0` instead: the
    caller gets empty results at once, even for a statement that would run for minutes. The
    distinct labels of a "label contains" run as they are (one probe per label): the
    statements after them depend on what they find.
    """
    seen: list[Statement] = []

    def _record(_conn: Any, _cursor: Any, statement: str, parameters: Any, _context: Any,
                _many: bool) -> tuple[str, Any]:
        seen.append((statement, parameters))
        if dry_run and statement.lstrip().upper().startswith("SELECT") and statement_role(statement) != "distinct labels":
            statement = f"SELECT * FROM ({statement}) AS dry_run LIMIT 0"
        return statement, parameters

    event.listen(engine, "before_cursor_execute", _record, retval=True)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", _record)


def statement_role(sql: str) -> str:
    """Which of a page's statements this is: the distinct labels of a "label contains"
    (queries.labels_containing), the capped count, the HTML page's contacts, or the page."""
    if re.search(r"\)\s+AS labels\b", sql):  # the labels subquery of both of its forms
        return "distinct labels"
    if re.match(r"\s*SELECT contacts\.id, contacts\.name\s", sql):  # queries.list_contacts
        return "contacts"
    return "count" if "count(" in sql.lower() else "page"


def page_statements(engine: Engine, case: cases.Case, depth: int) -> list[Statement]:
    """The SELECTs of one keyset page request of `case` at `depth` (BEGIN left out), as the
    app sends them; captured without running them."""
    setup = dataset.make_engine(str(engine.url.render_as_string(hide_password=False)), app_timeouts=False)
    try:
        with Session(setup) as session:
            position = cases.position(session, case, depth)
    finally:
        setup.dispose()
    filters = web.filters_from(position.keyset_query(case))
    with captured(engine, dry_run=True) as seen, Session(engine) as session:
        queries.list_page(session, filters)
    return [(sql, params) for sql, params in seen if sql.strip().upper() != "BEGIN"]


def plan_lines(connection: Connection, backend: str, statement: str, parameters: Any, run: bool = True) -> list[str]:
    """The backend's plan of one statement, a line per plan row; with `run`, also what really
    happened (PostgreSQL ANALYZE, MariaDB ANALYZE: the statement is executed)."""
    prefix = {"postgresql": "EXPLAIN (ANALYZE, BUFFERS) " if run else "EXPLAIN ",
              "mariadb": "ANALYZE " if run else "EXPLAIN ", "sqlite": "EXPLAIN QUERY PLAN "}[backend]
    result = connection.exec_driver_sql(prefix + statement, parameters)
    rows = result.all()
    if backend == "postgresql":
        return [row[0] for row in rows]
    if backend == "sqlite":
        return [f"{'  ' * (row[1] > 0)}{row[3]}" for row in rows]
    names = list(result.keys())
    return [" | ".join(f"{n}={v}" for n, v in zip(names, row) if v is not None) for row in rows]


def explain(engine: Engine, statement: str, parameters: Any, run: bool = True) -> list[str]:
    """The plan; with `run`, also what really happened (the statement is executed)."""
    with engine.connect() as connection:
        started = time.perf_counter()
        lines = plan_lines(connection, backend_of(engine.url), statement, parameters, run)
        return lines + [f"(explained in {1000 * (time.perf_counter() - started):.1f} ms)"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=databases.BACKENDS, required=True)
    parser.add_argument("--case", action="append", help="case name (repeatable); default all")
    parser.add_argument("--depth", type=int, default=cases.FIRST)
    parser.add_argument("--size", type=int, default=1_000_000, help="the data set to explain on (must exist)")
    parser.add_argument("--sql", action="store_true", help="also print the statements")
    parser.add_argument("--plan-only", action="store_true", help="do not execute (no real row counts)")
    args = parser.parse_args()
    engine = dataset.make_engine(dataset.bench_url(args.db))
    chosen = [c for c in cases.CASES if not args.case or c.name in args.case]
    try:
        for case in chosen:
            with Session(engine) as session:
                total = cases.matches(session, case)
            if args.depth > 1 and total <= (args.depth - 1) * cases.PAGE_SIZE:
                print(f"== {args.db} | {case.name} | page {args.depth}: no such page ({total:,} matches)")
                continue
            for sql, params in page_statements(engine, case, args.depth):
                label = statement_role(sql)
                print(f"== {args.db} | {case.name} | page {args.depth} | {label}")
                if args.sql:
                    print(sql, params)
                try:
                    lines = explain(engine, sql, params, run=not args.plan_only)
                except DBAPIError as error:  # e.g. the app's statement timeout: say so, go on
                    lines = [f"failed: {error.orig}"]
                for line in lines:
                    print("  " + line)
    finally:
        engine.dispose()


if __name__ == "__main__":
    main()
