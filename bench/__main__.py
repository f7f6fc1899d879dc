"""`python -m bench [--db sqlite|postgresql|mariadb|all]`: the transactions page at 1M rows.

Per backend: make (or reuse) the data set, serve the fixed app in process and under gunicorn,
measure every case of bench/cases.py at each of its pages (keyset, OFFSET, the floor), print
the table and the targets, and write results/<backend>/bench/<timestamp>/bench.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session

from bench import cases, dataset, measure, report, throughput
from bench.app import create_app
from lab import databases, seed
from lab.engine import REPO_ROOT, server_version
from lab.harness.server import GunicornServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="all", choices=(*databases.BACKENDS, "all"),
                        help="backend; `all` (default) runs every one that answers")
    parser.add_argument("--size", type=int, default=seed.MAX_SIZE)
    parser.add_argument("--seed", type=int, default=seed.DEFAULT_SEED)
    parser.add_argument("--repeat", type=int, default=30, help="samples per figure (default 30)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help="stop sampling one figure after this long (at least 5 samples)")
    parser.add_argument("--case", action="append", help="only this case (repeatable)")
    parser.add_argument("--no-http", action="store_true", help="skip the gunicorn measurements")
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results")
    args = parser.parse_args(argv)
    # Stopped from outside (kill, a CI timeout): unwind, so the gunicorn servers it started
    # are stopped by the `finally` blocks that started them.
    signal.signal(signal.SIGTERM, lambda _signal, _frame: sys.exit(143))
    options = Options(size=args.size, seed_value=args.seed, budget=measure.Budget(args.repeat, seconds=args.seconds),
                      case_names=args.case, http=not args.no_http, results_dir=args.results)
    backends = databases.BACKENDS if args.db == "all" else (args.db,)
    summary = []
    for backend in backends:
        if not _available(backend, required=args.db != "all" or backend in databases.required_backends()):
            continue
        result = run_backend(backend, options)
        summary.append((backend, result))
    print("\n== summary")
    for backend, result in summary:
        met = sum(t["met"] for t in result["targets"])
        print(f"  {result['server_version']}: {met} of {len(result['targets'])} targets met -> {result['path']}")
    return 0 if summary else 1


@dataclass
class Options:
    size: int
    seed_value: int
    budget: measure.Budget
    case_names: list[str] | None
    http: bool
    results_dir: Path
    dataset_name: str | None = None  # default: lab_bench (1M rows) or lab_bench_<size>
    sqlite_dir: Path = dataset.SQLITE_DIR
    shallow: tuple[int, ...] = (cases.FIRST, cases.HUNDREDTH)
    deep: int = cases.TEN_THOUSANDTH
    deep_min_matches: int = cases.DEEP_PAGE_MIN_MATCHES
    throughput_seconds: float = 5.0  # each path, each round, under the 2x4 server
    throughput_rounds: int = 3


def _available(backend: str, required: bool) -> bool:
    """Is the server configured and answering? Missing and not required: skipped with a note."""
    if backend == "sqlite":
        return True
    try:
        engine = create_engine(databases.server_url(backend))
        try:
            with engine.connect():
                return True
        finally:
            engine.dispose()
    except (databases.BackendUnavailable, OperationalError) as error:
        reason = str(error).splitlines()[0]
        if required:
            raise SystemExit(f"{backend}: required but unavailable: {reason}") from None
        print(f"{backend}: skipped ({reason})")
        return False


def run_backend(backend: str, options: Options) -> dict[str, Any]:
    started = dt.datetime.now(dt.timezone.utc)
    load_before = os.getloadavg()
    data = dataset.ensure(backend, options.size, options.seed_value, name=options.dataset_name,
                          sqlite_dir=options.sqlite_dir)
    run_dir = report.run_directory(options.results_dir, backend, started)
    app = create_app({"SQLALCHEMY_DATABASE_URI": data.url})
    from fixed.app import db

    with app.app_context():
        app_engine: Engine = db.engine
    setup_engine = dataset.make_engine(data.url, app_timeouts=False)
    floor = measure.Floor(dataset.make_engine(data.url))
    server: GunicornServer | None = None
    capacity: dict[str, Any] | None = None
    try:
        version = server_version(setup_engine)
        if options.http:
            server = GunicornServer("bench.app:create_app()", env={"LAB_DATABASE_URL": data.url},
                                    log_path=run_dir / "gunicorn.log", workers=1, threads=1).start()
        client = app.test_client()
        counter = measure.StatementCounter(app_engine)
        by_size = statements_by_page_size(client, counter)
        positions = []
        chosen = [c for c in cases.CASES if not options.case_names or c.name in options.case_names]
        for case in chosen:
            with Session(setup_engine) as session:
                total = cases.matches(session, case)
                pages = [cases.position(session, case, depth) for depth in
                         cases.depths(total, options.shallow, options.deep, options.deep_min_matches)]
            targets = [measure.Target(p.keyset_query(case), p.offset_query(case)) for p in pages]
            measured = measure.measure_case(client, floor, counter, targets, server.port if server else None,
                                            options.budget)
            for position, figures in zip(pages, measured):
                row = position_row(case, position, total, figures)
                positions.append(row)
                print(f"{backend} | {case.name} | page {position.depth:,}: JSON p50 {row['in_process']['p50_ms']:.1f} ms"
                      f" = {row['ratio']:.1f}x its floor, HTML {row['html']['p50_ms']:.1f} ms = {row['html_ratio']:.1f}x",
                      file=sys.stderr)
        if server is not None:
            server.stop()
            server = None
            capacity = list_to_ping(data.url, run_dir, options)
    finally:
        if server is not None:
            server.stop()
        floor.close()
        floor.engine.dispose()
        setup_engine.dispose()
        app_engine.dispose()
    result: dict[str, Any] = {
        "schema_version": report.SCHEMA_VERSION,
        "backend": backend,
        "server_version": version,
        "started_at": started.isoformat(),
        "size": options.size,
        "seed": options.seed_value,
        "dataset": {"name": dataset.database_name(options.size) if options.dataset_name is None else options.dataset_name,
                    "reused": data.reused, "seed_seconds": round(data.seed_seconds, 2),
                    "seed_peak_mb": round(data.seed_peak_mb, 1), "seeded_at": data.seeded_at,
                    "index_changes": data.index_changes},
        "settings": {"page_size": cases.PAGE_SIZE, "repeat": options.budget.repeat, "seconds": options.budget.seconds,
                     "pages": list(options.shallow), "deep_page": options.deep,
                     "deep_min_matches": options.deep_min_matches, "http": options.http,
                     "gunicorn": "1 sync worker, a new connection per request" if options.http else None,
                     "cpus": os.cpu_count()},
        "load_average": {"before": [round(x, 2) for x in load_before],
                         "after": [round(x, 2) for x in os.getloadavg()]},
        "statements_by_page_size": by_size,
        "pings_per_request": max((p["pings"] for p in positions), default=0),
        "positions": positions,
        "throughput": capacity,
    }
    result["targets"] = [t.as_dict() for t in report.evaluate(result)]
    result["path"] = str(report.write(result, run_dir))
    print()
    print(report.header(result))
    print(report.table(result))
    print(report.throughput_lines(result))
    print("targets:")
    for target in report.evaluate(result):
        print(target.line())
    return result


def list_to_ping(url: str, run_dir: Path, options: Options) -> dict[str, Any]:
    """Requests/s of the first page (JSON and HTML) and of /_lab/ping on one gunicorn server
    of 2 workers x 4 threads, under the benchmark's own keep-alive load (bench/throughput.py)."""
    paths = {"ping": "/_lab/ping", "json": measure.KEYSET_PATH, "html": measure.HTML_PATH}
    with GunicornServer("fixed.app:create_app()", env={"LAB_DATABASE_URL": url},
                        log_path=run_dir / "gunicorn-2x4.log", workers=2, threads=4) as server:
        result = throughput.measure(server.port, paths, seconds=options.throughput_seconds,
                                    rounds=options.throughput_rounds)
    result["server"] = "gunicorn, 2 workers x 4 threads (gthread)"
    return result


def statements_by_page_size(client: Any, counter: measure.StatementCounter) -> dict[str, list[str]]:
    """The statements of one first-page request at several page sizes (they must not grow)."""
    found = {}
    for limit in (1, cases.PAGE_SIZE, 200):
        with counter.counting():
            measure.in_process(client, measure.KEYSET_PATH, cases.CASES[0].query(limit=limit))
        found[str(limit)] = list(counter.statements)
    return found


def position_row(case: cases.Case, position: cases.Position, total: int,
                 figures: measure.PositionResult) -> dict[str, Any]:
    in_process, floor = figures.in_process.summary(), figures.floor.summary()
    return {
        "case": case.name,
        "params": case.params,
        "why": case.why,
        "matches": total,
        "page": position.depth,
        "rows": figures.rows,
        "has_next": figures.next_cursor,
        "floor": floor,
        "floor_count": figures.floor_count.summary(),
        "in_process": in_process,
        "in_process_cpu": figures.in_process_cpu.summary(),
        "http": figures.http.summary() if figures.http else None,
        "offset": figures.offset.summary() if figures.offset else None,
        "offset_error": figures.offset_error,
        "overhead_ms": round(in_process["p50_ms"] - floor["p50_ms"], 3),
        "ratio": round(in_process["p50_ms"] / floor["p50_ms"], 2) if floor["p50_ms"] else None,
        "floor_matches_app": figures.floor_matches_app,
        "json_bytes": figures.json_bytes,
        "html_floor": figures.html_floor.summary(),
        "html": figures.html.summary(),
        "html_ratio": round(figures.html.p50 / figures.html_floor.p50, 2) if figures.html_floor.p50 else None,
        "html_bytes": figures.html_bytes,
        "html_statements": figures.html_statements,
        "statements": figures.statements,
        "pings": figures.pings,
        "offset_statements": figures.offset_statements,
    }


if __name__ == "__main__":
    sys.exit(main())
