"""One load, broken variant then fixed app, each on its own freshly seeded private database.

For each app: create and seed a database (identically), serve the app under gunicorn with
the cause's production profile (lab mode, a free 127.0.0.1 port), run the locust readers and
writers, audit the edited rows directly in the database, then (fixed app) measure the list
page against the trivial endpoint of the same server, and stop the server and drop the
database, also on failure. The checker then judges the merged request log.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import shutil
from collections import Counter
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

from sqlalchemy import create_engine, select

from lab import databases
from lab.engine import REPO_ROOT, configure_engine, engine_options
from lab import results
from lab.harness.runner import prepare_database
from lab.harness.scenario import DOCTOR_ENV, doctor_causes, doctor_findings, doctor_requested
from lab.harness.server import GunicornServer
from lab.models import Transaction
from loadtests import checker
from loadtests.locust_process import PhaseResult, request_stats, run_phase
from loadtests.profiles import Profile, profile_for

RESULTS_DIR = REPO_ROOT / "results"
AUDIT_CHUNK = 500
# The last line of a traceback in gunicorn's log: "sqlalchemy.exc.PendingRollbackError: ..."
EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*(?:Error|Exception|Warning)):", re.M)


@dataclass(frozen=True)
class LoadOptions:
    users: int = 50
    duration: int = 20  # seconds of the main phase
    reader_weight: int = 9
    writer_weight: int = 1
    wait_min: float = 0.05
    wait_max: float = 0.5
    size: int = 2_000  # seeded transactions
    ratio_seconds: int = 5  # each of the two ratio phases (fixed app); 0 skips them
    distributed: bool = False  # a locust master and two workers
    max_requests: int = 100_000  # per locust process
    timeout: float = 10.0  # seconds without a reply before a request counts as failed


@dataclass
class AppRun:
    """The outcome of one app under the load."""

    app: str
    module: str
    profile: Profile
    server_version: str = ""
    stats: dict[str, Any] = field(default_factory=dict)
    report: checker.Report | None = None
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    ratio: dict[str, Any] | None = None
    server_exceptions: dict[str, int] = field(default_factory=dict)  # from gunicorn's log: why the 5xx
    failure: str | None = None  # the run could not complete (e.g. the app did not start)
    doctor: list[dict[str, Any]] | None = None  # the doctor's findings (LAB_DOCTOR=1), None when not installed

    @property
    def cpu_share(self) -> float:
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "app": self.app, "module": self.module, "server_version": self.server_version, "profile": {**asdict(self.profile), "shape": self.profile.describe()},
            "stats": self.stats, "load_generator": {"cpu_seconds": round(self.cpu_seconds, 3),
                                                    "wall_seconds": round(self.wall_seconds, 3),
                                                    "cpu_per_wall": round(self.cpu_share, 3)},
            "checker": self.report.to_dict() if self.report else None, "ratio": self.ratio,
            "server_exceptions": self.server_exceptions, "failure": self.failure,
            **({"doctor": {"causes": doctor_causes(self.doctor), "findings": self.doctor}}
               if self.doctor is not None else {}),
        }


def app_modules(cause: str) -> dict[str, str]:
    """app -> module for this cause; the broken module must exist."""
    module = f"broken.{cause}"
    if importlib.util.find_spec(module) is None:
        known = sorted(p.stem for p in (REPO_ROOT / "broken").glob("*.py") if not p.stem.startswith("_"))
        raise SystemExit(f"no broken/{cause}.py; causes with a broken variant: {', '.join(known)}")
    return {"broken": module, "fixed": "fixed.app"}


# Causes whose cure promises each client its own writes, not everyone's at once: a replica
# (read-your-writes) lets another user's edit show a moment late, by design.
OWN_WRITES_CAUSES = frozenset({"replica_lag"})


def replica_env(cause: str, db_url: str, echo: Callable[[str], None]) -> dict[str, str]:
    """replica_lag on the servers: both apps read from the lab's replica (LAB_REPLICA_URL: the
    PostgreSQL hot standby, the MariaDB GTID replica), once it has applied the seeded database
    (bounded, by log position)."""
    if cause != "replica_lag" or db_url.startswith("sqlite"):
        return {}
    from lab import replica

    backend = replica.backend_of(db_url)
    watcher = create_engine(replica.replica_url(databases.server_url(backend).render_as_string(hide_password=False)),
                            isolation_level="AUTOCOMMIT")
    primary = create_engine(db_url)
    try:
        with primary.connect() as on_primary, watcher.connect() as on_standby:
            waited = replica.wait_for_replay(on_standby, replica.primary_position(on_primary), timeout=30)
            delay = replica.apply_delay(on_standby)
    finally:
        primary.dispose()
        watcher.dispose()
    echo(f"  reads on the replica (it applies the primary {delay} late; the seed was applied after {waited:.2f} s)")
    return {"LAB_REPLICA_URL": replica.replica_url(db_url)}


def run_app(cause: str, app: str, module: str, backend: str, options: LoadOptions, raw_dir: Path,
            echo: Callable[[str], None], ratio: bool) -> AppRun:
    """Seed, serve, load, audit (and measure the ratio); everything started is stopped."""
    profile = profile_for(cause)
    run = AppRun(app, module, profile)
    out_dir = raw_dir / app
    out_dir.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix=f"lab-load-{cause}-{app}-"))
    db_url = ""
    server: GunicornServer | None = None
    try:
        db_url = databases.private_database(backend, f"lab_load_{app}_{os.getpid()}_{cause}"[:63], workdir)
        run.server_version = version = prepare_database(db_url, options.size)
        echo(f"[{cause} | {app} | {version}] {profile.describe()}, {options.users} users for {options.duration} s"
             + (" (locust master + 2 workers)" if options.distributed else ""))
        env = {"LAB_DATABASE_URL": db_url, "LAB_CONTROL_DIR": str(workdir), **replica_env(cause, db_url, echo)}
        doctor_file = out_dir / "doctor.jsonl"
        if doctor_requested():  # the same doctor as in `make doctor`'s scenarios, in broken and fixed alike
            env.update(DOCTOR_ENV, STALE_DOCTOR_FILE=str(doctor_file))
        server = GunicornServer(
            f"{module}:create_app()", env,
            out_dir / "gunicorn.log", workers=profile.workers, threads=profile.threads, preload=profile.preload,
        )
        server.start()
        main = run_phase("main", server.port, out_dir, users=options.users, seconds=options.duration,
                         classes=["ReaderUser", "WriterUser"], env=locust_env(options), distributed=options.distributed)
        records = read_logs(main.log_dir)
        acked_rows = {r.row_id for r in records if r.acknowledged and r.row_id is not None}
        audit = audit_rows(db_url, acked_rows)  # directly after the run, before anything else
        (out_dir / "audit.json").write_text(json.dumps({str(k): asdict(v) for k, v in sorted(audit.items())}, indent=1))
        run.report = checker.check(records, audit, own_writes_only=cause in OWN_WRITES_CAUSES)
        run.stats = {**checker.throughput(records), "locust_counted": request_stats(main.entries())["requests"]}
        run.cpu_seconds, run.wall_seconds = main.cpu_seconds, main.wall_seconds
        if main.killed:
            run.failure = "locust did not finish in time and was killed"
        if ratio and options.ratio_seconds > 0:
            run.ratio = measure_ratio(server.port, out_dir, options)
    except Exception as error:  # reported in the table, never hidden
        run.failure = f"{type(error).__name__}: {error}"
    finally:
        if server is not None:
            server.stop()
            run.server_exceptions = server_exceptions(out_dir / "gunicorn.log")
            if doctor_requested():
                run.doctor = doctor_findings(doctor_file)
                echo(f"  doctor on {app}: " + (", ".join(doctor_causes(run.doctor)) or "nothing found"))
        if db_url:
            try:
                databases.drop_database(db_url)  # also ends sessions a broken app left open
            except Exception as error:
                echo(f"  warning: could not drop {db_url}: {error}")
        shutil.rmtree(workdir, ignore_errors=True)
    return run


def server_exceptions(log_path: Path) -> dict[str, int]:
    """How often each exception type ended a traceback in the server's log, most frequent first."""
    if not log_path.exists():
        return {}
    counts = Counter(EXCEPTION_LINE.findall(log_path.read_text(errors="replace")))
    return dict(counts.most_common())


def locust_env(options: LoadOptions, wait: bool = True) -> dict[str, str]:
    return {
        "LOAD_READER_WEIGHT": str(options.reader_weight), "LOAD_WRITER_WEIGHT": str(options.writer_weight),
        "LOAD_WAIT_MIN": str(options.wait_min if wait else 0), "LOAD_WAIT_MAX": str(options.wait_max if wait else 0),
        "LOAD_MAX_REQUESTS": str(options.max_requests), "LOAD_TIMEOUT": str(options.timeout),
    }


def read_logs(log_dir: Path) -> list[checker.Record]:
    """Every process's log of one phase, merged into one history."""
    lines: list[str] = []
    for path in sorted(log_dir.glob("requests-*.jsonl")):
        lines.extend(path.read_text(encoding="utf-8").splitlines())
    return checker.parse_lines(lines)


def audit_rows(db_url: str, row_ids: Iterable[int]) -> dict[int, checker.AuditRow]:
    """The final version, label and contact of the given rows, read directly (a new connection)."""
    ids = sorted(row_ids)
    engine = configure_engine(create_engine(db_url, **engine_options(db_url)))
    found: dict[int, checker.AuditRow] = {}
    try:
        with engine.connect() as connection:
            for start in range(0, len(ids), AUDIT_CHUNK):
                statement = select(Transaction.id, Transaction.version, Transaction.label, Transaction.contact_id) \
                    .where(Transaction.id.in_(ids[start:start + AUDIT_CHUNK]))
                for row_id, version, label, contact_id in connection.execute(statement):
                    found[row_id] = checker.AuditRow(version, label, contact_id)
    finally:
        engine.dispose()
    return found


def measure_ratio(port: int, out_dir: Path, options: LoadOptions) -> dict[str, Any]:
    """The first list page alone, then /_lab/ping alone, same users, no think time."""
    figures: dict[str, Any] = {}
    for name, user in (("list", "ListPageUser"), ("ping", "PingUser")):
        phase: PhaseResult = run_phase(name, port, out_dir, users=options.users, seconds=options.ratio_seconds,
                                       classes=[user], env=locust_env(options, wait=False),
                                       distributed=options.distributed)
        stats = checker.throughput(read_logs(phase.log_dir))
        figures[name] = {**stats, "locust_counted": request_stats(phase.entries())["requests"],
                         "load_generator_cpu_per_wall": round(phase.cpu_share, 3)}
    list_rps, ping_rps = figures["list"]["requests_per_second"], figures["ping"]["requests_per_second"]
    figures["list_to_ping"] = round(list_rps / ping_rps, 3) if ping_rps else None
    return figures


def results_dir(backend: str, cause: str, started: dt.datetime, distributed: bool) -> Path:
    return results.new_run_dir(RESULTS_DIR / backend / cause / "load", started, "-distributed" if distributed else "")


def link_latest(run_dir: Path, distributed: bool = False) -> None:
    """Point `latest` (or `latest-distributed`) in the cause's load folder at this run."""
    results.link_latest(run_dir, "latest-distributed" if distributed else "latest")
