"""`python -m bench.indexes [--db all]`: measure the plans that justify each index, and write
lab/INDEXES.md from them.

On the benchmark's data set (1M rows, made or reused as `make bench` does), per backend:
- every bench case at each of its pages: the statements one `list_page` call sends, each run
  under the backend's explain (bench/explain.py) and timed (median of a few runs);
- the alternatives the design rejected, written out as statements and measured the same way
  (other spellings of the keyset condition, whole rows instead of the deferred join, the
  wallet filter as a semi-join, the label walk on each backend, `label IN` without the merge,
  the redundant date bound, "label contains" as a LIKE over rows);
- on PostgreSQL and SQLite, inside transactions that are rolled back: the counts of the
  combinations with narrow indexes instead of the covering ones, and the LIKE fallback
  without the trigram index; what the indexes cost writers (bench/writecost.py);
- the size of the table and of each index, the server's version, the data set's load time.
The measurements go to lab/INDEXES.measured.json; lab/INDEXES.md is rendered from them and
the prose of bench/indexes_template.md (bench/indexes_doc.py). `--render-only` re-renders.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import re
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Connection, Engine, and_, or_, select, text, tuple_, union_all
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from bench import cases, dataset, explain, writecost
from lab import databases, queries, seed, web
from lab.engine import REPO_ROOT, server_version
from lab.models import Base, Transaction, Wallet

MEASURED_JSON = REPO_ROOT / "lab" / "INDEXES.measured.json"
TIMED_RUNS = 5  # a statement is timed this many times (once when a run takes over SLOW_MS)
SLOW_MS = 300.0
# What is kept of a plan: the lines that say how rows were found, filtered, sorted, counted.
PLAN_KEEP = re.compile(r"Scan|Index Cond|Filter|Rows Removed|Sort Method|Heap Fetches|Execution Time|"
                       r"Recursive Union|Merge Append|InitPlan|SubPlan|Append|Limit|Aggregate|"
                       r"select_type=|SEARCH|SCAN|SUBQUERY|TEMP B-TREE|COMPOUND|UNION|MERGE|failed")
NARROW_COUNT_CASES = ("type + asset", "asset + unlabelled", "wallet + type")
Record = dict[str, Any]


def explain_and_time(connection: Connection, backend: str, sql: str, params: Any) -> Record:
    """The plan of one statement (run for real where the backend's explain runs it) and the
    median time of running it as the app does, on `connection`."""
    try:
        lines = explain.plan_lines(connection, backend, sql, params)
        times = []
        while len(times) < TIMED_RUNS:
            started = time.perf_counter()
            connection.exec_driver_sql(sql, params).all()
            times.append(1000 * (time.perf_counter() - started))
            if times[-1] > SLOW_MS:
                break
        return {"lines": [line for line in lines if PLAN_KEEP.search(line)],
                "ms": round(statistics.median(times), 3), "error": None}
    except DBAPIError as error:  # e.g. the app's 5 s statement limit: recorded, not fatal
        connection.rollback()
        failure = str(error.orig).splitlines()[0]
    # Not run to the end: the plan the server chose, estimated only (`EXPLAIN` alone).
    lines = [] if backend == "sqlite" else explain.plan_lines(connection, backend, sql, params, run=False)
    return {"lines": [line for line in lines if PLAN_KEEP.search(line)], "ms": None, "error": failure}


def statements_of(engine: Engine, run: Callable[[Session], Any]) -> list[explain.Statement]:
    """The SELECTs `run` sends through a session (captured, not run: bench/explain.py)."""
    with explain.captured(engine, dry_run=True) as seen, Session(engine) as session:
        run(session)
    return [(sql, params) for sql, params in seen if sql.strip().upper() != "BEGIN"]


def _one(engine: Engine, statement: Any) -> explain.Statement:
    (captured,) = statements_of(engine, lambda session: session.execute(statement).all())
    return captured


def _filters_at(session: Session, case_name: str, depth: int) -> queries.Filters:
    """The filters of the keyset request for page `depth` of a case (on a data set too small
    to have that page, its last page: the tests measure a small one)."""
    case = next(c for c in cases.CASES if c.name == case_name)
    last_page = max(1, -(-cases.matches(session, case) // cases.PAGE_SIZE))
    return web.filters_from(cases.position(session, case, min(depth, last_page)).keyset_query(case))


def _ids(filters: queries.Filters) -> Any:
    """The page's inner query as the app writes it (no label merge)."""
    return queries.newest_first(queries._filtered(select(Transaction.id), filters),
                                filters.cursor).limit(filters.limit + 1)


def alternatives(session: Session) -> dict[str, Any]:
    """Statements of the designs the app did not take, beside the ones it did, by name."""
    T = Transaction
    deep = _filters_at(session, "no filter", cases.TEN_THOUSANDTH)
    t, i = deep.cursor.occurred_at, deep.cursor.id  # type: ignore[union-attr]
    newest = (T.occurred_at.desc(), T.id.desc())
    fee = _filters_at(session, "type", cases.HUNDREDTH)
    wallets = _filters_at(session, "several wallets", cases.FIRST)
    semi_join = (select(T.id).where(T.wallet_id.in_(select(Wallet.id).where(Wallet.address.in_(wallets.wallets))))
                 .order_by(*newest).limit(wallets.limit + 1))
    labels = queries.labels_containing(session, "exchange") or ()
    contains = replace(_filters_at(session, "label contains", cases.HUNDREDTH), label_in=labels)
    months = _filters_at(session, "date range, 13 months", cases.TEN_THOUSANDTH)
    pattern = {"pattern": queries._contains_pattern("exchange"), "rows": queries.DISTINCT_LABELS_READ + 1}
    return {
        "keyset, OR": select(T.id).where(or_(T.occurred_at < t, and_(T.occurred_at == t, T.id < i)))
        .order_by(*newest).limit(51),
        "keyset, row value": select(T.id).where(tuple_(T.occurred_at, T.id) < tuple_(t, i)).order_by(*newest).limit(51),
        "keyset, app": _ids(deep),
        "type page, whole rows": queries.newest_first(queries._filtered(select(T), fee), fee.cursor).limit(51),
        "type page, deferred ids": _ids(fee),
        "wallets, semi-join": semi_join,
        "wallets, scalar subqueries": _ids(wallets),
        "labels, recursive walk": (queries._labels_containing_statement("sqlite"), pattern),
        "labels, group by": (queries._labels_containing_statement("mariadb"), pattern),
        "label in, one IN": _ids(contains),
        "label in, merged ranges": _merged_by_label(contains),
        "13 months deep, with to": _ids(months),
        "13 months deep, without to": _ids(queries._without_redundant_end(months)),
        "contains by LIKE, page": _ids(queries.Filters(label_contains="mortgage")),
        "contains by LIKE, count": queries.capped_count_statement(queries.Filters(label_contains="mortgage")),
        "contains by LIKE, count of a match": queries.capped_count_statement(queries.Filters(label_contains="exchange")),
    }


def _merged_by_label(filters: queries.Filters) -> Any:
    """The page's ids as one keyset range per label, each at most a page, merged with UNION
    ALL and cut to the page: the form the app sent for "label contains" before these
    measurements showed `label IN (...)` as fast on every backend."""
    ranges = [_ids(replace(filters, label_in=(label,))).add_columns(Transaction.occurred_at).subquery()
              for label in filters.label_in or ()]
    merged = union_all(*(select(r.c.id, r.c.occurred_at) for r in ranges)).subquery("by_label")
    return (select(merged.c.id).order_by(merged.c.occurred_at.desc(), merged.c.id.desc())
            .limit(filters.limit + 1))


def measure_cases(engine: Engine, backend: str) -> dict[str, Record]:
    plans: dict[str, Record] = {}
    with Session(engine) as session:
        totals = {case.name: cases.matches(session, case) for case in cases.CASES}
    for case in cases.CASES:
        for depth in cases.depths(totals[case.name]):
            statements = explain.page_statements(engine, case, depth)
            with engine.connect() as connection:
                for sql, params in statements:
                    role = explain.statement_role(sql)
                    record = explain_and_time(connection, backend, sql, params)
                    plans[f"{case.name} | page {depth} | {role}"] = {**record, "matches": totals[case.name]}
    return plans


def measure_alternatives(engine: Engine, backend: str) -> dict[str, Record]:
    plans: dict[str, Record] = {}
    with Session(engine) as session:
        chosen = alternatives(session)
    for name, statement in chosen.items():
        if isinstance(statement, tuple):
            statement, params = statement
            (sql, driver_params), = statements_of(engine, lambda s: s.execute(statement, params).all())
        else:
            sql, driver_params = _one(engine, statement)
        with engine.connect() as connection:
            plans[name] = explain_and_time(connection, backend, sql, driver_params)
    return plans


def measure_without(engine: Engine, backend: str) -> dict[str, Record]:
    """PostgreSQL and SQLite (transactional DDL): the combinations' counts with narrow indexes
    instead of covering ones, and the LIKE fallback without the trigram index (PostgreSQL),
    each in a transaction that is rolled back."""
    if backend == "mariadb":
        return {}
    plans: dict[str, Record] = {}
    counts: dict[str, explain.Statement] = {}
    for name in NARROW_COUNT_CASES:
        case = next(c for c in cases.CASES if c.name == name)
        counts[name] = next(s for s in explain.page_statements(engine, case, cases.FIRST)
                            if explain.statement_role(s[0]) == "count")
    setup = dataset.make_engine(str(engine.url.render_as_string(hide_password=False)), app_timeouts=False)
    try:
        plans.update(_explained_after(setup, backend, writecost._narrow,
                                      {f"{name} | count, narrow indexes": s for name, s in counts.items()}))
        if backend == "postgresql":
            like = {"contains by LIKE, count, no trigram index": queries.Filters(label_contains="mortgage"),
                    "contains by LIKE, count of a match, no trigram index": queries.Filters(label_contains="exchange")}
            plans.update(_explained_after(setup, backend, writecost._without_trigram,
                                          {name: _one(engine, queries.capped_count_statement(f)) for name, f in like.items()}))
    finally:
        setup.dispose()
    return plans


def _explained_after(setup: Engine, backend: str, change: Callable[[Connection], None],
                     statements: dict[str, explain.Statement]) -> dict[str, Record]:
    """Each statement explained and timed after `change` (DDL), in one transaction rolled back."""
    with setup.connect() as connection:
        transaction = connection.begin()
        try:
            change(connection)
            return {name: explain_and_time(connection, backend, sql, params)
                    for name, (sql, params) in statements.items()}
        finally:
            transaction.rollback()


def sizes(engine: Engine, backend: str) -> dict[str, int]:
    """Bytes of the transactions table and of each of its indexes (MariaDB: data and all
    secondary indexes together, as information_schema gives them)."""
    with engine.connect() as connection:
        if backend == "postgresql":
            rows = connection.execute(text(
                "SELECT c.relname, pg_relation_size(c.oid) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = current_schema() AND (c.relname = 'transactions' OR c.oid IN "
                "(SELECT indexrelid FROM pg_index WHERE indrelid = 'transactions'::regclass))"))
        elif backend == "sqlite":
            rows = connection.execute(text(
                "SELECT d.name, sum(d.pgsize) FROM dbstat d JOIN sqlite_master m ON m.name = d.name "
                "WHERE m.tbl_name = 'transactions' GROUP BY d.name"))
        else:
            rows = connection.execute(text(
                "SELECT 'transactions', data_length FROM information_schema.tables WHERE table_schema = DATABASE() "
                "AND table_name = 'transactions' UNION ALL SELECT 'all secondary indexes', index_length "
                "FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name = 'transactions'"))
        return {str(name): int(size) for name, size in rows}


def schema_of(backend: str) -> dict[str, str]:
    """The index definitions of lab/models.py for this backend: the doc is stale when they change."""
    definitions = {}
    table = Base.metadata.tables["transactions"]
    for index in dataset.declared_indexes({"postgresql": "postgresql", "mariadb": "mysql", "sqlite": "sqlite"}[backend]):
        definitions[index.name] = ", ".join(getattr(e, "name", None) or str(e) for e in index.expressions)
    for constraint in table.constraints:
        if constraint.name and constraint.name.startswith("uq_"):
            definitions[constraint.name] = ", ".join(c.name for c in constraint.columns)
    return definitions


def measure(backend: str, size: int = seed.MAX_SIZE, writes: bool = True, log: Callable[[str], None] = print,
            sqlite_dir: Path = dataset.SQLITE_DIR) -> Record:
    started = time.perf_counter()
    data = dataset.ensure(backend, size, log=log, sqlite_dir=sqlite_dir)
    engine = dataset.make_engine(data.url)
    try:
        log(f"{backend}: the cases' plans")
        case_plans = measure_cases(engine, backend)
        log(f"{backend}: the alternatives")
        plans = {"cases": case_plans, "alternatives": measure_alternatives(engine, backend),
                 "without": measure_without(engine, backend)}
        record: Record = {"version": server_version(engine), "size": size, "schema": schema_of(backend),
                          "sizes": sizes(engine, backend), **plans,
                          "load": {"seconds": round(data.seed_seconds, 1), "peak_mb": round(data.seed_peak_mb, 1)}}
    finally:
        engine.dispose()
    if writes and backend != "mariadb":
        log(f"{backend}: what the indexes cost writers")
        record["writecost"] = writecost.measure(data.url, repeat=3, rows=min(writecost.ROWS, size // 10))
    record["measured_at"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    record["seconds"] = round(time.perf_counter() - started, 1)
    return record


def main() -> None:
    from bench import indexes_doc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="all", choices=(*databases.BACKENDS, "all"),
                        help="re-measure this backend (the others are kept from the JSON); default all")
    parser.add_argument("--render-only", action="store_true", help="only write lab/INDEXES.md from the JSON")
    args = parser.parse_args()
    measured = json.loads(MEASURED_JSON.read_text()) if MEASURED_JSON.exists() else {}
    if not args.render_only:
        for backend in databases.BACKENDS if args.db == "all" else (args.db,):
            measured[backend] = measure(backend)
            MEASURED_JSON.write_text(json.dumps(measured, indent=1) + "\n")
    indexes_doc.INDEXES_MD.write_text(indexes_doc.render(measured))
    print(f"wrote {indexes_doc.INDEXES_MD.relative_to(REPO_ROOT)} from {MEASURED_JSON.relative_to(REPO_ROOT)}")


if __name__ == "__main__":
    main()
