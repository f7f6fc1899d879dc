"""`python -m loadtests.faults [--db ...] [--app fixed|<cause>]`: the load while things break.

The locust readers and writers of `make load` run against one app under gunicorn (2 workers x
4 threads) while a schedule of faults runs, each in its own window:
- `worker_kill`: a worker is killed with SIGKILL, three times, 2 s apart; the window ends when
  gunicorn has its workers back and the server answers;
- `server_restart`: the database server is stopped (fast shutdown) and started again by
  `scripts/services.sh`, which waits until it answers; SQLite has no server: its file is locked
  by another process (`BEGIN EXCLUSIVE`) for longer than the app's busy timeout instead;
- `connections_killed`: every connection of the app's database is ended from the server side
  (`pg_terminate_backend`, MariaDB `KILL`); SQLite has no server side: not applicable;
- `pool_exhausted`: in each worker, sessions held elsewhere (a thread of the worker's own, as a
  job or a leaked session would) check out every connection of the app's pool (5 + 10
  overflow) for 3 s, so the worker's requests wait for the pool meanwhile (lab mode's
  `/_lab/take-pool`);
- `slots_exhausted`: sessions held elsewhere take every connection the server allows for 3 s;
  SQLite has no connection limit: not applicable.
Then the checker (loadtests/checker.py) judges the merged log, and each error is placed inside
or outside a window (a window counts until `GRACE_SECONDS` after it ends, for the requests in
flight when it ended). The verdict holds when nothing acknowledged is lost, nothing stale is
shown, errors happen only inside windows, and requests succeed again within
`RECOVERY_TARGET_SECONDS` of the end of each window (the database answering again, the workers
back): the pool's pre-ping replaces the connections a fault ended.

Everything started is stopped, also on failure; a server it stopped is started again before
it returns. Traffic goes to 127.0.0.1 only, bounded by the phase's run time and request cap.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from lab import databases, results
from lab.engine import LOCK_TIMEOUT_MS, REPO_ROOT
from lab.harness.runner import prepare_database
from lab.harness.server import Actor, GunicornServer
from loadtests import checker
from loadtests.locust_process import run_phase
from loadtests.runner import LoadOptions, audit_rows, locust_env, read_logs, server_exceptions

GRACE_SECONDS = 2.0
RECOVERY_TARGET_SECONDS = 2.0
WAIT_LIMIT_SECONDS = 60.0  # a server not back after this long fails the run, clearly
ANSWER_LIMIT_SECONDS = 15.0  # an app whose new workers do not answer by then is said so, and the run goes on
FAULTS = ("worker_kill", "server_restart", "connections_killed", "pool_exhausted", "slots_exhausted")


@dataclass
class Window:
    fault: str
    started: float  # time.monotonic(), the clock of the request log
    ended: float | None = None
    note: str = ""
    applicable: bool = True
    detail: dict[str, Any] = field(default_factory=dict)  # what the fault measured, per fault


@dataclass
class FaultContext:
    backend: str
    db_url: str
    server: GunicornServer
    windows: list[Window] = field(default_factory=list)


# ---- the faults ----------------------------------------------------------------------------

def _children(pid: int) -> list[int]:
    """The live child processes of `pid` (gunicorn's workers of its master)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid and fields[0] != "Z":
                found.append(int(entry))
    return found


def _within(condition: Callable[[], bool], seconds: float) -> bool:
    """Whether `condition` became true within `seconds` (a broken app may never answer again:
    that is a finding of the run, not a failure of the fault)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def _wait(condition: Callable[[], bool], what: str) -> None:
    """`condition` must become true within WAIT_LIMIT_SECONDS, or the run fails saying what."""
    if not _within(condition, WAIT_LIMIT_SECONDS):
        raise RuntimeError(f"{what}: not after {WAIT_LIMIT_SECONDS:.0f} s")


def worker_kill(context: FaultContext, kills: int = 3, every: float = 2.0) -> Window:
    server = context.server
    assert server.process is not None
    window = Window("worker_kill", time.monotonic())
    killed = []
    for number in range(kills):
        workers = _children(server.process.pid)
        victim = sorted(workers)[number % len(workers)]
        os.kill(victim, signal.SIGKILL)
        killed.append(victim)
        if number < kills - 1:
            time.sleep(every)
    _wait(lambda: len([p for p in _children(server.process.pid) if p not in killed]) >= server.workers,
          "gunicorn's workers back")
    window.ended = time.monotonic()  # the fault is over: what the app does next is judged outside the window
    answered = _within(server.answers, ANSWER_LIMIT_SECONDS)
    window.note = f"SIGKILL to workers {', '.join(map(str, killed))}" + (
        "" if answered else f"; the new workers did not answer within {ANSWER_LIMIT_SECONDS:.0f} s (all their threads busy or hung)")
    return window


def _server_answers(db_url: str) -> bool:
    engine = create_engine(db_url, pool_pre_ping=False)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
        return True
    except Exception:
        return False
    finally:
        engine.dispose()


def _stop_server(backend: str, db_url: str) -> None:
    if backend == "postgresql":
        engine = create_engine(db_url)
        with engine.connect() as connection:
            number = int(connection.execute(text("SHOW server_version_num")).scalar_one())
        engine.dispose()
        subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", str(number // 10000), "main", "stop",
                        "-m", "fast"], check=True, capture_output=True)
    else:
        subprocess.run(["mariadb-admin", "--protocol=socket", "--socket=/run/mysqld/mysqld.sock", "-uroot",
                        "shutdown"], check=True, capture_output=True)
        _wait(lambda: not Path("/run/mysqld/mysqld.sock").exists() or not _server_answers(db_url), "MariaDB down")


def _start_servers() -> None:
    """scripts/services.sh starts what is down and waits until it answers (as `make services`)."""
    subprocess.run(["bash", str(REPO_ROOT / "scripts" / "services.sh")], check=True, capture_output=True,
                   timeout=WAIT_LIMIT_SECONDS * 2)


def server_restart(context: FaultContext) -> Window:
    if context.backend == "sqlite":
        return _sqlite_locked(context)
    window = Window("server_restart", time.monotonic())
    try:
        _stop_server(context.backend, context.db_url)
    finally:
        _start_servers()  # also when the stop failed half-way: the server must be up again
    _wait(lambda: _server_answers(context.db_url), "the database server answering")
    window.ended = time.monotonic()
    window.note = ("fast shutdown" if context.backend == "postgresql" else "shutdown") + ", then started by scripts/services.sh"
    return window


def _sqlite_locked(context: FaultContext) -> Window:
    """Another process's exclusive lock on the file, held past the app's busy timeout."""
    held = LOCK_TIMEOUT_MS / 1000 + 1.5
    path = context.db_url.removeprefix("sqlite:///")
    window = Window("server_restart", time.monotonic(), note=f"SQLite: the file locked (BEGIN EXCLUSIVE) for {held:.1f} s, "
                                                            f"beyond the {LOCK_TIMEOUT_MS / 1000:.0f} s busy timeout")
    locker = sqlite3.connect(path, timeout=10, isolation_level=None)
    try:
        locker.execute("BEGIN EXCLUSIVE")
        window.started = time.monotonic()
        time.sleep(held)
        locker.execute("ROLLBACK")
    except sqlite3.OperationalError as error:  # the app itself holds a write lock that long
        window.note = f"SQLite: the file could not be locked in 10 s ({error}): a connection of the app holds it"
    finally:
        locker.close()
    window.ended = time.monotonic()
    return window


def connections_killed(context: FaultContext) -> Window:
    window = Window("connections_killed", time.monotonic())
    if context.backend == "sqlite":
        window.ended, window.applicable = window.started, False
        window.note = "N/A: SQLite has no server side to end a connection from"
        return window
    engine = create_engine(context.db_url)
    try:
        with engine.connect() as connection:
            if context.backend == "postgresql":
                ended = connection.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid()")).scalar_one()
            else:
                ids = connection.execute(text(
                    "SELECT id FROM information_schema.processlist WHERE db = DATABASE() AND id <> CONNECTION_ID()")).scalars().all()
                for thread_id in ids:
                    try:
                        connection.execute(text(f"KILL CONNECTION {int(thread_id)}"))
                    except Exception:  # gone meanwhile
                        pass
                ended = len(ids)
    finally:
        engine.dispose()
    window.ended = time.monotonic()
    window.note = f"{ended} connections ended from the server side"
    return window


POOL_HELD_SECONDS = 3.0


def pool_exhausted(context: FaultContext) -> Window:
    """Every connection of each worker's pool checked out by sessions held in that worker.
    Several takes are sent at once, so that each worker accepts one (a worker already taking
    answers "busy"); each worker holds its connections POOL_HELD_SECONDS from its take. A
    worker that does not answer the take (a broken app whose threads are all hung) is said so
    in the note: that is the app's state, not a failure of the fault."""
    server = context.server
    window = Window("pool_exhausted", time.monotonic())
    taken: dict[str, dict[str, Any]] = {}
    unanswered: list[str] = []
    actor = Actor("faults", server.port, timeout=ANSWER_LIMIT_SECONDS)

    def take() -> None:
        try:
            reply = actor.get("/_lab/take-pool", seconds=POOL_HELD_SECONDS)
        except OSError as error:  # timed out or refused
            unanswered.append(type(error).__name__)
            return
        if reply.status != 200:
            raise RuntimeError(f"/_lab/take-pool answered HTTP {reply.status}: {reply.text[:200]}")
        answer = reply.json()
        if not answer["busy"]:
            taken[str(answer["pid"])] = {**answer, "at": time.monotonic()}

    for _round in range(5):  # bounded: a worker never reached is said in the note
        with ThreadPoolExecutor(max_workers=2 * server.workers) as pool:
            list(pool.map(lambda _n: take(), range(2 * server.workers)))
        if len(taken) >= server.workers or unanswered:
            break
    if taken:
        time.sleep(max(0.0, max(t["at"] for t in taken.values()) + POOL_HELD_SECONDS - time.monotonic()))
    window.ended = time.monotonic()
    window.detail = {"workers": {pid: {"held": t["held"], "capacity": t["capacity"]} for pid, t in taken.items()},
                     "unanswered_takes": len(unanswered)}
    counts = ", ".join(f"{t['held']}/{t['capacity']}" for t in taken.values())
    window.note = (f"{counts} pool connections taken in worker{'s' if len(taken) > 1 else ''} {', '.join(taken)}, "
                   f"held {POOL_HELD_SECONDS:g} s" if taken else "no worker took its pool")
    if len(taken) < server.workers:
        window.note += f"; only {len(taken)} of {server.workers} workers reached"
    if unanswered:
        window.note += (f"; {len(unanswered)} takes unanswered within {ANSWER_LIMIT_SECONDS:.0f} s "
                        f"(the workers' threads busy or hung)")
    return window


SLOTS_HELD_SECONDS = 3.0
MAX_HELD_CONNECTIONS = 400


def slots_exhausted(context: FaultContext) -> Window:
    """Sessions held elsewhere, in another process, take every connection the server allows, for
    a few seconds: the app's pool cannot open a connection it does not already hold."""
    window = Window("slots_exhausted", time.monotonic())
    if context.backend == "sqlite":
        window.ended, window.applicable = window.started, False
        window.note = "N/A: SQLite has no connection limit to exhaust"
        return window
    engine = create_engine(context.db_url, poolclass=NullPool)
    held: list[Any] = []
    refused = ""
    try:
        while len(held) < MAX_HELD_CONNECTIONS:
            try:
                held.append(engine.raw_connection())
            except Exception as error:  # "too many clients" / "Too many connections"
                refused = str(getattr(error, "orig", error)).splitlines()[0]
                break
        time.sleep(SLOTS_HELD_SECONDS)  # the window began with the first connection taken
    finally:
        for connection in held:
            connection.close()
        engine.dispose()
    window.ended = time.monotonic()
    window.note = (f"{len(held)} connections taken, then held for {SLOTS_HELD_SECONDS:g} s; the next one: "
                   f"{refused or 'not refused'}")
    return window


SCHEDULE: dict[str, Callable[[FaultContext], Window]] = {
    "worker_kill": worker_kill, "server_restart": server_restart, "connections_killed": connections_killed,
    "pool_exhausted": pool_exhausted, "slots_exhausted": slots_exhausted}


# ---- judging the windows ---------------------------------------------------------------------

def _inside(record: checker.Record, windows: list[Window]) -> Window | None:
    for window in windows:
        if window.applicable and record.received >= window.started and record.sent <= (window.ended or window.started) + GRACE_SECONDS:
            return window
    return None


def judge_windows(records: list[checker.Record], windows: list[Window]) -> dict[str, Any]:
    """Errors inside and outside each window, and how long after each window ended the first
    request sent after it succeeded."""
    errors = [r for r in records if checker.error_of(r) is not None]
    by_window: dict[str, list[dict[str, Any]]] = {}
    outside = []
    for record in errors:
        window = _inside(record, windows)
        if window is None:
            outside.append(record)
        else:
            by_window.setdefault(window.fault, []).append({"url": record.url, "status": record.status})
    figures = []
    for window in windows:
        ended = window.ended or window.started
        first_ok = min((r.received for r in records if r.sent >= ended and r.status is not None and r.status < 500
                        and checker.error_of(r) is None), default=None)
        during = [r.received - r.sent for r in records
                  if window.applicable and r.received >= window.started and r.sent <= ended]
        figures.append({**asdict(window), "errors_inside": len(by_window.get(window.fault, [])),
                        "slowest_inside_seconds": round(max(during), 3) if during else None,
                        "seconds": round(ended - window.started, 3),
                        "recovery_seconds": round(first_ok - ended, 3) if first_ok is not None else None})
    return {"windows": figures, "errors_outside": len(outside),
            "outside_examples": [{"url": r.url, "status": r.status, "error": r.error, "sent": r.sent} for r in outside[:5]]}


def verdict(report: checker.Report, windows: dict[str, Any]) -> dict[str, Any]:
    recoveries = [w["recovery_seconds"] for w in windows["windows"] if w["applicable"]]
    checks = {
        "no acknowledged write lost": report.lost_count == 0,
        "no stale read": report.stale_count == 0,
        "errors only inside fault windows": windows["errors_outside"] == 0,
        f"requests succeed again within {RECOVERY_TARGET_SECONDS:g} s of each window's end":
            all(r is not None and r <= RECOVERY_TARGET_SECONDS for r in recoveries),
    }
    return {"holds": all(checks.values()), "checks": checks}


# ---- a run -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaultOptions:
    faults: tuple[str, ...] = FAULTS
    first_at: float = 4.0  # seconds into the load
    apart: float = 8.0  # between the starts of two faults
    settle: float = 5.0  # load after the last fault
    users: int = 20
    size: int = 2_000


def run(backend: str, module: str, options: FaultOptions, out_dir: Path,
        echo: Callable[[str], None] = print) -> dict[str, Any]:
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = out_dir / "control"
    workdir.mkdir(exist_ok=True)
    db_url = databases.private_database(backend, f"lab_faults_{os.getpid()}", workdir)  # BackendUnavailable: not started
    server: GunicornServer | None = None
    outcome: dict[str, Any] = {"backend": backend, "app": module}
    try:
        outcome["server_version"] = prepare_database(db_url, options.size)
        server = GunicornServer(f"{module}:create_app()", {"LAB_DATABASE_URL": db_url, "LAB_CONTROL_DIR": str(workdir)},
                                out_dir / "gunicorn.log", workers=2, threads=4).start()
        context = FaultContext(backend, db_url, server)
        # The last fault's own length (the kills: 5 s; taking every slot of a loaded server: up
        # to 10 s seen) is covered by `settle` plus a margin.
        margin = 15 if "slots_exhausted" in options.faults else 6
        duration = int(options.first_at + options.apart * (len(options.faults) - 1) + options.settle + margin)
        failures: list[BaseException] = []

        def schedule() -> None:
            started = time.monotonic()
            try:
                for number, name in enumerate(options.faults):
                    time.sleep(max(0.0, started + options.first_at + number * options.apart - time.monotonic()))
                    window = SCHEDULE[name](context)
                    context.windows.append(window)
                    echo(f"  {name}: {window.note} ({(window.ended or window.started) - window.started:.1f} s)")
            except BaseException as error:  # reported; the load goes on to its end
                failures.append(error)

        faults = threading.Thread(target=schedule, name="faults")
        load_options = LoadOptions(users=options.users, duration=duration)
        faults.start()
        phase = run_phase("main", server.port, out_dir, users=options.users, seconds=duration,
                          classes=["ReaderUser", "WriterUser"], env=locust_env(load_options))
        faults.join(timeout=WAIT_LIMIT_SECONDS * 3)
        if failures:
            raise RuntimeError(f"a fault could not be run: {failures[0]}") from failures[0]
        records = read_logs(phase.log_dir)
        audit = audit_rows(db_url, {r.row_id for r in records if r.acknowledged and r.row_id is not None})
        report = checker.check(records, audit)
        windows = judge_windows(records, context.windows)
        outcome.update(checker=report.to_dict(), faults=windows, verdict=verdict(report, windows),
                       stats=checker.throughput(records), locust_killed=phase.killed)
    finally:
        if server is not None:
            server.stop()
            outcome["server_exceptions"] = server_exceptions(out_dir / "gunicorn.log")
        if backend != "sqlite" and not _server_answers(db_url):
            _start_servers()  # never leave a server down
        databases.drop_database(db_url)
    return outcome


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def print_outcome(outcome: dict[str, Any], echo: Callable[[str], None] = print) -> None:
    echo(f"== {outcome['app']} on {outcome['server_version']}: {outcome['stats']['requests']} requests")
    echo(f"  {'fault':<20} {'window s':>9} {'errors in':>10} {'slowest s':>10} {'recovered after s':>18}  note")
    for w in outcome["faults"]["windows"]:
        recovery = "-" if w["recovery_seconds"] is None or not w["applicable"] else f"{w['recovery_seconds']:.2f}"
        echo(f"  {w['fault']:<20} {w['seconds']:>9.2f} {w['errors_inside']:>10} {_seconds(w.get('slowest_inside_seconds')):>10} "
             f"{recovery:>18}  {w['note']}")
    report = outcome["checker"]
    echo(f"  errors outside the windows: {outcome['faults']['errors_outside']}; lost writes: {report['lost_writes']}; "
         f"stale reads: {report['stale_reads']}")
    for check, held in outcome["verdict"]["checks"].items():
        echo(f"  [{'x' if held else ' '}] {check}")
    echo(f"  verdict: {'holds' if outcome['verdict']['holds'] else 'DOES NOT HOLD'}")


README_START, README_END = "<!-- faults:start", "<!-- faults:end -->"


def readme_tables(apps: tuple[str, ...]) -> str:
    """The latest stored fault run of each app on each backend, as README tables."""
    lines = ["| backend | app | requests | errors outside windows | lost writes | stale reads | verdict |",
             "|---|---|---|---|---|---|---|"]
    detail = ["| backend | app | fault | window s | errors inside | slowest request inside s | recovered after s | what happened |",
              "|---|---|---|---|---|---|---|---|"]
    folders = []
    for backend in databases.BACKENDS:
        for app in apps:
            path = REPO_ROOT / "results" / backend / "faults" / app / "latest" / "faults.json"
            if not path.exists():
                raise SystemExit(f"no fault run of {app} on {backend} yet: run `make faults DB={backend} APP={app}`")
            outcome = json.loads(path.read_text())
            folders.append(str(path.parent.resolve().relative_to(REPO_ROOT)))
            report = outcome["checker"]
            lines.append(f"| {outcome['server_version']} | {app} | {outcome['stats']['requests']:,} | "
                         f"{outcome['faults']['errors_outside']} | {report['lost_writes']} | {report['stale_reads']} | "
                         f"{'holds' if outcome['verdict']['holds'] else 'does not hold'} |")
            for w in outcome["faults"]["windows"]:
                recovered = "-" if w["recovery_seconds"] is None or not w["applicable"] else f"{w['recovery_seconds']:.2f}"
                detail.append(f"| {outcome['server_version']} | {app} | {w['fault']} | {w['seconds']:.2f} | "
                              f"{w['errors_inside']} | {_seconds(w.get('slowest_inside_seconds'))} | {recovered} | "
                              f"{w['note'].replace('|', '/')} |")
    source = "Generated by `make faults-readme` from " + ", ".join(f"`{f}`" for f in folders) + "."
    return "\n".join([source, "", *lines, "", *detail])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtests.faults", description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", choices=(*databases.BACKENDS, "all"))
    parser.add_argument("--app", default="fixed", help="fixed (default) or a cause: its broken variant")
    parser.add_argument("--fault", action="append", choices=FAULTS, help="only these faults (repeatable)")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--readme", action="store_true",
                        help="then write the latest runs of the fixed app and of shared_session into README.md")
    args = parser.parse_args(argv)
    module = "fixed.app" if args.app == "fixed" else f"broken.{args.app}"
    options = FaultOptions(faults=tuple(args.fault or FAULTS), users=args.users)
    started = dt.datetime.now(dt.timezone.utc)
    held = True
    for backend in databases.BACKENDS if args.db == "all" else (args.db,):
        run_dir = results.new_run_dir(REPO_ROOT / "results" / backend / "faults" / args.app, started)
        outcome = run(backend, module, options, run_dir / "raw")
        (run_dir / "faults.json").write_text(json.dumps(outcome, indent=1))
        results.link_latest(run_dir, "latest")
        print_outcome(outcome)
        held &= outcome["verdict"]["holds"]
    if args.readme:
        from lab.harness.runner import write_readme_matrix

        write_readme_matrix(readme_tables(("fixed", "shared_session")), (README_START, README_END))
        print("README.md: the fault tables rewritten")
    return 0 if held or args.app != "fixed" else 1


if __name__ == "__main__":
    raise SystemExit(main())
