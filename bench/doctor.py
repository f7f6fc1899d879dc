"""`python -m bench.doctor [--db sqlite|postgresql|mariadb]`: what the stale-data doctor costs.

On the fixed app (fixed/app.py) with 2,000 seeded rows, in one run:
1. in process (Flask test client): p50 / p90 of GET /api/transactions and GET /transactions
   without the doctor and with it, in interleaved rounds in the same process, and the overhead;
2. under gunicorn (2 workers x 4 threads, 127.0.0.1): the same two pages on a server without
   the doctor and one with it (LAB_EXTENSIONS=stale_doctor:StaleDoctor), loaded in turns by a
   bounded threaded load generator (a new connection per request): requests/s, p50, overhead;
3. memory: one process, doctor on, RSS after 1,000 and after 10,000 requests to
   /api/transactions (the doctor keeps no strong references, so it must not grow).
The table is printed with its targets; the figures go to
results/<db>/bench-doctor/<timestamp>/result.json (and a `latest` link beside it).

Fair baseline in process: the doctor's listeners are process-wide (class-level SQLAlchemy
events, Flask signals for every app), so the "without" rounds run on a second app without the
extension *and* with the monitor's listeners removed (MONITOR.release()); the "with" rounds put
them back (MONITOR.acquire()). Toggling happens between rounds, never inside a timed request.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import json
import os
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from bench.measure import percentile
from lab import databases
from lab.engine import REPO_ROOT
from lab.harness.runner import prepare_database
from lab.harness.scenario import DOCTOR_ENV
from lab.harness.server import Actor, GunicornServer
from lab.results import link_latest, new_run_dir

SCHEMA_VERSION = 1
SIZE = 2_000
PAGES = ("/api/transactions", "/transactions")
MEMORY_PATH = "/api/transactions"
OVERHEAD_TARGET_PERCENT = 5.0
MEMORY_TARGET_PERCENT = 5.0
DOCTOR_EXTENSION = DOCTOR_ENV["LAB_EXTENSIONS"]  # installed as `make doctor` installs it
PROBE_HEADER = "X-Stale-Doctor-Probe"
LAYERS_HEADER = "X-Stale-Doctor-Layers"


@dataclass
class Settings:
    """How much to measure; the defaults are the real run, the smoke test shrinks them."""

    size: int = SIZE
    warmup: int = 30  # requests per page and variant before any timing
    rounds: int = 10  # interleaved in-process rounds
    per_round: int = 40  # requests per page, variant and round (10 x 40 = 400 timed each)
    http: bool = True
    http_rounds: int = 4
    http_per_round: int = 200  # requests per page, variant and round, spread over the load threads
    http_threads: int = 8
    http_warmup: int = 40
    memory_first: int = 1_000
    memory_total: int = 10_000


# ---- figures -------------------------------------------------------------------------------

def summary(ms: list[float]) -> dict[str, Any]:
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.50), 3), "p90_ms": round(percentile(ms, 0.90), 3),
            "min_ms": round(min(ms), 3), "max_ms": round(max(ms), 3)}


def overhead_percent(without: float, with_: float) -> float:
    """How much more the doctor costs, in percent of the figure without it."""
    return round(100.0 * (with_ - without) / without, 2) if without else 0.0


# ---- 1. in process -------------------------------------------------------------------------

def _clear_doctor_environment() -> dict[str, str]:
    """LAB_EXTENSIONS / STALE_DOCTOR_* of the caller must not leak into the apps built here."""
    removed = {k: os.environ.pop(k) for k in list(os.environ)
               if k == "LAB_EXTENSIONS" or k.startswith("STALE_DOCTOR_")}
    return removed


def make_apps(db_url: str, findings_file: Path) -> tuple[Any, Any, Any]:
    """(app without the doctor, app with it, the doctor). Both are the fixed app on `db_url`."""
    from fixed.app import create_app, db
    from stale_doctor import StaleDoctor

    _clear_doctor_environment()
    without = create_app({"SQLALCHEMY_DATABASE_URI": db_url})
    with_ = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "STALE_DOCTOR_FILE": str(findings_file)})
    doctor = StaleDoctor(with_, db)
    return without, with_, doctor


def doctor_on(on: bool) -> None:
    """Put the doctor's process-wide listeners in place (the doctor's app is the only user) or
    take them away, so the "without" rounds pay nothing for it."""
    from stale_doctor.monitor import MONITOR

    if on and not MONITOR.installed:
        MONITOR.acquire()
    elif not on and MONITOR.installed:
        MONITOR.release()


def doctor_requests_seen() -> int:
    """GET requests with SQL the doctor's response check has seen since its listeners went in."""
    from stale_doctor.monitor import MONITOR

    return sum(stats.runs_with_sql for stats in MONITOR.endpoint_sql.values())


def _get(client: Any, path: str) -> None:
    response = client.get(path)
    if response.status_code != 200:
        raise RuntimeError(f"GET {path}: {response.status_code} {response.get_data(as_text=True)[:300]}")
    response.close()


def in_process(db_url: str, settings: Settings, findings_file: Path,
               echo: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    app_without, app_with, doctor = make_apps(db_url, findings_file)
    clients = {"without": app_without.test_client(), "with": app_with.test_client()}
    samples: dict[str, dict[str, list[float]]] = {p: {"without": [], "with": []} for p in PAGES}
    seen, findings_before = 0, len(doctor.findings)  # the sink is process-wide: count only this run's
    try:
        for variant in ("without", "with"):
            doctor_on(variant == "with")
            for path in PAGES:
                for _ in range(settings.warmup):
                    _get(clients[variant], path)
        for number in range(settings.rounds):
            # Alternate which variant goes first, so a drift within a round favours neither.
            order = ("without", "with") if number % 2 == 0 else ("with", "without")
            for variant in order:
                doctor_on(variant == "with")
                seen_before = doctor_requests_seen() if variant == "with" else 0
                client = clients[variant]
                for path in PAGES:
                    target = samples[path][variant]
                    for _ in range(settings.per_round):
                        started = time.perf_counter()
                        _get(client, path)
                        target.append(1000 * (time.perf_counter() - started))
                if variant == "with":
                    seen += doctor_requests_seen() - seen_before
            echo(f"in process: round {number + 1}/{settings.rounds} done")
        active = {"extension_installed": "stale_doctor" in app_with.extensions,
                  "not_on_baseline_app": "stale_doctor" not in app_without.extensions,
                  "requests_seen_by_doctor": seen,
                  "requests_with_doctor": settings.rounds * settings.per_round * len(PAGES)}
        findings = doctor.findings[findings_before:]
    finally:
        doctor_on(False)
        doctor.close()
        _dispose(app_without, app_with)
    pages = {}
    for path in PAGES:
        without, with_ = summary(samples[path]["without"]), summary(samples[path]["with"])
        pages[path] = {"without": without, "with": with_,
                       "overhead_p50_percent": overhead_percent(without["p50_ms"], with_["p50_ms"]),
                       "overhead_p90_percent": overhead_percent(without["p90_ms"], with_["p90_ms"])}
    return {"pages": pages, "doctor": active, "findings": [f.cause for f in findings],
            "settings": {"warmup": settings.warmup, "rounds": settings.rounds, "per_round": settings.per_round}}


def _dispose(*apps: Any) -> None:
    from fixed.app import db

    for app in apps:
        with app.app_context():
            db.engine.dispose()


# ---- 2. under gunicorn ---------------------------------------------------------------------

def load(port: int, path: str, requests: int, threads: int) -> dict[str, Any]:
    """`requests` GETs spread over `threads` threads: wall time, requests/s, latencies, errors."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    counter = iter(range(requests))

    def worker() -> None:
        mine: list[float] = []
        while True:
            with lock:
                if next(counter, None) is None:
                    break
            started = time.perf_counter()
            try:
                status = Actor("bench", port, timeout=30).get(path).status
                if status != 200:
                    raise RuntimeError(f"HTTP {status}")
                mine.append(1000 * (time.perf_counter() - started))
            except (OSError, RuntimeError) as error:
                with lock:
                    errors.append(f"{type(error).__name__}: {error}")
        with lock:
            latencies.extend(mine)

    pool = [threading.Thread(target=worker, daemon=True) for _ in range(threads)]
    began = time.perf_counter()
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return {"seconds": time.perf_counter() - began, "latencies": latencies, "errors": errors}


def server_env(db_url: str, doctor_file: Path | None) -> dict[str, str]:
    env = {"LAB_DATABASE_URL": db_url, "LAB_EXTENSIONS": ""}
    if doctor_file is not None:
        # The probe hook costs one header lookup per request; it lets the benchmark check, with
        # one request, that the doctor really runs inside the workers.
        env.update(LAB_EXTENSIONS=DOCTOR_EXTENSION, STALE_DOCTOR_FILE=str(doctor_file), STALE_DOCTOR_PROBE="1")
    return env


def doctor_answers(port: int) -> bool:
    """Does the server's doctor answer the layer probe (its after_request hook ran)?"""
    reply = Actor("bench", port, timeout=30, headers={PROBE_HEADER: "transactions:1:version"}).get(PAGES[0])
    return LAYERS_HEADER.lower() in reply.headers


def under_gunicorn(db_url: str, settings: Settings, run_dir: Path,
                   echo: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    doctor_file = run_dir / "doctor-gunicorn.jsonl"
    servers = {
        "without": GunicornServer("fixed.app:create_app()", env=server_env(db_url, None),
                                  log_path=run_dir / "gunicorn-without.log", workers=2, threads=4),
        "with": GunicornServer("fixed.app:create_app()", env=server_env(db_url, doctor_file),
                               log_path=run_dir / "gunicorn-with.log", workers=2, threads=4),
    }
    runs: dict[str, dict[str, dict[str, Any]]] = {p: {v: {"seconds": 0.0, "latencies": [], "errors": []}
                                                       for v in servers} for p in PAGES}
    try:
        for server in servers.values():
            server.start()
        active = {"without": doctor_answers(servers["without"].port), "with": doctor_answers(servers["with"].port)}
        for variant, server in servers.items():
            for path in PAGES:
                load(server.port, path, settings.http_warmup, settings.http_threads)
        for number in range(settings.http_rounds):
            order = ("without", "with") if number % 2 == 0 else ("with", "without")
            for path in PAGES:
                for variant in order:
                    got = load(servers[variant].port, path, settings.http_per_round, settings.http_threads)
                    into = runs[path][variant]
                    into["seconds"] += got["seconds"]
                    into["latencies"] += got["latencies"]
                    into["errors"] += got["errors"]
            echo(f"gunicorn: round {number + 1}/{settings.http_rounds} done")
        active["with_after_load"] = doctor_answers(servers["with"].port)
    finally:
        for server in servers.values():
            server.stop()
    pages = {}
    for path in PAGES:
        figures = {}
        for variant, run in runs[path].items():
            ok = run["latencies"]
            figures[variant] = {"requests": len(ok) + len(run["errors"]), "errors": len(run["errors"]),
                                "first_error": run["errors"][0] if run["errors"] else None,
                                "requests_per_second": round(len(ok) / run["seconds"], 1) if run["seconds"] else 0.0,
                                "p50_ms": round(percentile(ok, 0.50), 3) if ok else None,
                                "p90_ms": round(percentile(ok, 0.90), 3) if ok else None}
        without, with_ = figures["without"], figures["with"]
        rps_cost = (overhead_percent(with_["requests_per_second"], without["requests_per_second"])
                    if with_["requests_per_second"] else None)
        pages[path] = {**figures,
                       # throughput: how much longer the same work takes with the doctor
                       "overhead_rps_percent": rps_cost,
                       "overhead_p50_percent": overhead_percent(without["p50_ms"] or 0, with_["p50_ms"] or 0)}
    return {"pages": pages, "doctor_answers_probe": active,
            "doctor_file_exists": doctor_file.exists(),
            "settings": {"workers": 2, "threads": 4, "load_threads": settings.http_threads,
                         "rounds": settings.http_rounds, "per_round": settings.http_per_round,
                         "warmup": settings.http_warmup, "connection": "new per request (keep-alive off)"}}


# ---- 3. memory -----------------------------------------------------------------------------

def rss_kib() -> int:
    """This process's resident set (VmRSS of /proc/self/status), in KiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS in /proc/self/status")


def memory(db_url: str, settings: Settings, findings_file: Path,
           echo: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """RSS of this process, doctor on, after `memory_first` and after `memory_total` requests."""
    from stale_doctor.monitor import MONITOR

    app_without, app_with, doctor = make_apps(db_url, findings_file)
    client = app_with.test_client()
    findings_before = len(doctor.findings)
    try:
        doctor_on(True)
        for done in range(1, settings.memory_total + 1):
            _get(client, MEMORY_PATH)
            if done == settings.memory_first:
                gc.collect()
                first = rss_kib()
            if done % 2_000 == 0:
                echo(f"memory: {done:,}/{settings.memory_total:,} requests")
        gc.collect()
        last = rss_kib()
        kept = {"open_transactions": len(MONITOR.open_transactions), "finished_loads": len(MONITOR.finished_loads),
                "endpoints": len(MONITOR.endpoint_sql), "findings": len(doctor.findings) - findings_before}
        active = {"extension_installed": "stale_doctor" in app_with.extensions,
                  "requests_seen_by_doctor": doctor_requests_seen()}
    finally:
        doctor_on(False)
        doctor.close()
        _dispose(app_without, app_with)
    return {"path": MEMORY_PATH, "requests_first": settings.memory_first, "requests_total": settings.memory_total,
            "rss_first_kib": first, "rss_last_kib": last, "ratio": round(last / first, 4),
            "growth_percent": overhead_percent(first, last), "doctor_state_sizes": kept, "doctor": active}


# ---- the run -------------------------------------------------------------------------------

def targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for path, page in result["in_process"]["pages"].items():
        value = page["overhead_p50_percent"]
        found.append({"name": f"in-process p50 overhead of the doctor on {path} < {OVERHEAD_TARGET_PERCENT:g} %",
                      "value": f"{value:+.1f} %", "met": value < OVERHEAD_TARGET_PERCENT})
    if result.get("gunicorn"):
        for path, page in result["gunicorn"]["pages"].items():
            value = page["overhead_rps_percent"]
            found.append({"name": f"gunicorn throughput overhead of the doctor on {path} < {OVERHEAD_TARGET_PERCENT:g} %",
                          "value": f"{value:+.1f} %" if value is not None else "n/a",
                          "met": value is not None and value < OVERHEAD_TARGET_PERCENT})
    growth = result["memory"]["growth_percent"]
    found.append({"name": f"RSS after {result['memory']['requests_total']:,} requests within "
                          f"{MEMORY_TARGET_PERCENT:g} % of after {result['memory']['requests_first']:,}",
                  "value": f"{growth:+.1f} % (ratio {result['memory']['ratio']:.3f})",
                  "met": abs(growth) <= MEMORY_TARGET_PERCENT})
    return found


def table(result: dict[str, Any]) -> str:
    lines = [f"stale-doctor overhead on the fixed app: {result['server_version']}, {result['size']:,} rows, "
             f"{result['settings']['cpus']} CPUs", "",
             "1. in process (Flask test client), ms; overhead = with / without - 1",
             f"   {'page':<20}{'p50 without':>12}{'p50 with':>10}{'p90 without':>12}{'p90 with':>10}"
             f"{'p50 +%':>9}{'p90 +%':>9}{'n':>6}"]
    for path, page in result["in_process"]["pages"].items():
        w, d = page["without"], page["with"]
        lines.append(f"   {path:<20}{w['p50_ms']:>12.2f}{d['p50_ms']:>10.2f}{w['p90_ms']:>12.2f}{d['p90_ms']:>10.2f}"
                     f"{page['overhead_p50_percent']:>+9.1f}{page['overhead_p90_percent']:>+9.1f}{d['n']:>6}")
    doc = result["in_process"]["doctor"]
    lines.append(f"   doctor active in the 'with' rounds: extension={doc['extension_installed']}, saw "
                 f"{doc['requests_seen_by_doctor']}/{doc['requests_with_doctor']} requests; findings: "
                 f"{', '.join(result['in_process']['findings']) or 'none'}")
    if result.get("gunicorn"):
        g = result["gunicorn"]
        s = g["settings"]
        lines += ["", f"2. gunicorn ({s['workers']} workers x {s['threads']} threads), {s['load_threads']} load threads, "
                      f"new connection per request; overhead rps = without / with - 1",
                  f"   {'page':<20}{'rps without':>12}{'rps with':>10}{'p50 without':>12}{'p50 with':>10}"
                  f"{'rps +%':>9}{'p50 +%':>9}{'n':>6}{'err':>5}"]
        for path, page in g["pages"].items():
            w, d = page["without"], page["with"]
            rps = page["overhead_rps_percent"]
            lines.append(f"   {path:<20}{w['requests_per_second']:>12.1f}{d['requests_per_second']:>10.1f}"
                         f"{(w['p50_ms'] or 0):>12.2f}{(d['p50_ms'] or 0):>10.2f}"
                         f"{(rps if rps is not None else float('nan')):>+9.1f}{page['overhead_p50_percent']:>+9.1f}"
                         f"{d['requests']:>6}{w['errors'] + d['errors']:>5}")
        a = g["doctor_answers_probe"]
        lines.append(f"   doctor answers its probe: with={a['with']} (after the load: {a['with_after_load']}), "
                     f"without={a['without']}")
    m = result["memory"]
    lines += ["", f"3. memory, doctor on, {m['path']} (test client): VmRSS after {m['requests_first']:,} requests "
                  f"{m['rss_first_kib'] / 1024:.1f} MiB, after {m['requests_total']:,} {m['rss_last_kib'] / 1024:.1f} MiB, "
                  f"ratio {m['ratio']:.3f}",
              f"   doctor state after the run: {m['doctor_state_sizes']}", "", "targets:"]
    for target in result["targets"]:
        lines.append(f"  [{'met' if target['met'] else 'MISSED'}] {target['name']}: {target['value']}")
    return "\n".join(lines)


def database(backend: str, size: int, workdir: Path) -> tuple[str, str]:
    """A fresh database with `size` seeded rows: (URL, server version)."""
    url = databases.private_database(backend, "lab_bench_doctor", workdir)
    return url, prepare_database(url, size)


def run(backend: str, settings: Settings, results_dir: Path, echo: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    started = dt.datetime.now(dt.timezone.utc)
    run_dir = new_run_dir(results_dir / backend / "bench-doctor", started)
    workdir = Path(tempfile.mkdtemp(prefix="lab-bench-doctor-"))
    url, version = database(backend, settings.size, workdir)
    load_before = os.getloadavg()
    try:
        echo(f"{backend}: {version}, {settings.size:,} rows seeded")
        result: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION, "backend": backend, "server_version": version,
            "started_at": started.isoformat(), "size": settings.size,
            "settings": {"cpus": os.cpu_count(), **settings.__dict__},
        }
        result["in_process"] = in_process(url, settings, run_dir / "doctor-in-process.jsonl", echo)
        result["gunicorn"] = under_gunicorn(url, settings, run_dir, echo) if settings.http else None
        result["memory"] = memory(url, settings, run_dir / "doctor-memory.jsonl", echo)
    finally:
        databases.drop_database(url)
        for leftover in workdir.iterdir():
            leftover.unlink()
        workdir.rmdir()
    result["load_average"] = {"before": [round(x, 2) for x in load_before],
                              "after": [round(x, 2) for x in os.getloadavg()]}
    result["targets"] = targets(result)
    path = run_dir / "result.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    link_latest(run_dir)
    result["path"] = str(path)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.doctor", description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", choices=databases.BACKENDS)
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--rounds", type=int, default=Settings.rounds, help="interleaved in-process rounds")
    parser.add_argument("--per-round", type=int, default=Settings.per_round,
                        help="requests per page, variant and round in process")
    parser.add_argument("--http-rounds", type=int, default=Settings.http_rounds)
    parser.add_argument("--http-per-round", type=int, default=Settings.http_per_round)
    parser.add_argument("--no-http", action="store_true", help="skip the gunicorn measurements")
    parser.add_argument("--memory-requests", type=int, default=Settings.memory_total)
    parser.add_argument("--results", type=Path, default=REPO_ROOT / "results")
    args = parser.parse_args(argv)
    settings = Settings(size=args.size, rounds=args.rounds, per_round=args.per_round, http=not args.no_http,
                        http_rounds=args.http_rounds, http_per_round=args.http_per_round,
                        memory_total=args.memory_requests,
                        memory_first=min(Settings.memory_first, args.memory_requests))
    try:
        result = run(args.db, settings, args.results, echo=lambda line: print(line, file=sys.stderr, flush=True))
    except databases.BackendUnavailable as error:
        print(f"{args.db}: unavailable: {error}", file=sys.stderr)
        return 1
    print()
    print(table(result))
    print(f"\n-> {result['path']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
