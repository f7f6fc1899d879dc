"""Run locust as its own processes (never imported here: it patches the process with gevent).

One phase = one locust run against one server: a single process, or a master and two workers
on 127.0.0.1. Every process runs in its own session so it can be killed as a group, is
bounded by a deadline, and is reaped with os.wait4 to learn the CPU time it used (the load
generator's own cost, printed beside the results).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lab.engine import REPO_ROOT
from lab.harness.server import free_port

LOCUSTFILE = REPO_ROOT / "loadtests" / "locustfile.py"
STOP_TIMEOUT_SECONDS = 5  # users finish their current task before they stop
STARTUP_ALLOWANCE_SECONDS = 30  # imports, worker registration, writing the reports


@dataclass
class PhaseResult:
    """What the locust processes of one phase left behind."""

    name: str
    json_path: Path
    log_dir: Path
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    exit_codes: list[int] = field(default_factory=list)
    killed: bool = False  # the deadline passed: the processes were killed

    @property
    def cpu_share(self) -> float:
        """Load generator CPU seconds per wall second (1.0 = one core busy)."""
        return self.cpu_seconds / self.wall_seconds if self.wall_seconds else 0.0

    def entries(self) -> list[dict[str, Any]]:
        """locust's final per-request statistics (--json-file): its final, complete figures."""
        return json.loads(self.json_path.read_text()) if self.json_path.exists() else []


def run_phase(name: str, port: int, out_dir: Path, *, users: int, seconds: int, classes: list[str],
              env: dict[str, str], distributed: bool = False) -> PhaseResult:
    """Run one headless locust phase against 127.0.0.1:`port` and wait for it (bounded)."""
    log_dir = out_dir / f"requests-{name}"
    log_dir.mkdir(parents=True, exist_ok=True)
    json_prefix = out_dir / f"locust-{name}"  # locust appends ".json"
    result = PhaseResult(name, json_prefix.with_suffix(".json"), log_dir)
    common = ["-f", str(LOCUSTFILE), "--host", f"http://127.0.0.1:{port}", "--loglevel", "WARNING"]
    run = ["--headless", "--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds}s",
           "--stop-timeout", str(STOP_TIMEOUT_SECONDS), "--exit-code-on-error", "0", "--only-summary",
           "--json-file", str(json_prefix)]
    process_env = {**os.environ, **env, "LOAD_LOG_DIR": str(log_dir), "PYTHONPATH": str(REPO_ROOT)}
    if distributed:
        master_port = free_port()
        commands = [common + run + ["--master", "--master-bind-host", "127.0.0.1", "--master-bind-port",
                                    str(master_port), "--expect-workers", "2"] + classes]
        commands += [common + ["--worker", "--master-host", "127.0.0.1", "--master-port", str(master_port)] + classes
                     for _ in range(2)]
    else:
        commands = [common + run + classes]
    deadline = time.monotonic() + seconds + STOP_TIMEOUT_SECONDS + STARTUP_ALLOWANCE_SECONDS
    started = time.monotonic()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        for number, arguments in enumerate(commands):
            with (out_dir / f"locust-{name}-{number}.log").open("ab") as log:
                processes.append(subprocess.Popen(
                    [sys.executable, "-m", "locust", *arguments], cwd=REPO_ROOT, env=process_env,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                ))
        for process in processes:
            code, cpu = _reap(process, deadline)
            result.exit_codes.append(code)
            result.cpu_seconds += cpu
            result.killed |= code == -signal.SIGKILL
    finally:
        for process in processes:  # only on failure: a process still running is killed
            if process.returncode is None:
                _kill_group(process)
                result.killed = True
    result.wall_seconds = time.monotonic() - started
    for log in out_dir.glob(f"locust-{name}-*.log"):  # locust is quiet unless something went wrong
        if log.stat().st_size == 0:
            log.unlink()
    return result


def _reap(process: subprocess.Popen[bytes], deadline: float) -> tuple[int, float]:
    """Wait for `process` until the deadline (then kill its group); return exit code and CPU s."""
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid == process.pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime
        if time.monotonic() > deadline:
            os.killpg(process.pid, signal.SIGKILL)
            _, status, usage = os.wait4(process.pid, 0)
            process.returncode = os.waitstatus_to_exitcode(status)
            return process.returncode, usage.ru_utime + usage.ru_stime
        time.sleep(0.05)


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=10)


def request_stats(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over locust's per-request entries: requests, failures, requests/s, percentiles (ms).

    A cross-check of the request log (loadtests.checker.throughput gives the figures shown):
    percentiles are locust's own (its rounded response-time histogram) over all entries
    merged; requests/s is all requests over the span from the first entry's start to the
    last request. A distributed run may miss a worker's last report here.
    """
    histogram: dict[int, int] = {}
    requests = failures = 0
    for entry in entries:
        requests += entry["num_requests"]
        failures += entry["num_failures"]
        for milliseconds, count in entry["response_times"].items():
            histogram[int(float(milliseconds))] = histogram.get(int(float(milliseconds)), 0) + count
    starts = [e["start_time"] for e in entries if e.get("start_time")]
    ends = [e["last_request_timestamp"] for e in entries if e.get("last_request_timestamp")]
    span = max(ends) - min(starts) if starts and ends else 0.0
    return {
        "requests": requests,
        "failures": failures,
        "requests_per_second": round(requests / span, 2) if span > 0 else 0.0,
        "p50_ms": percentile(histogram, 0.50),
        "p95_ms": percentile(histogram, 0.95),
        "p99_ms": percentile(histogram, 0.99),
    }


def percentile(histogram: dict[int, int], fraction: float) -> int:
    """The response time that `fraction` of the requests finished within (locust's method)."""
    total = sum(histogram.values())
    if not total:
        return 0
    within = int(total * fraction)
    counted = 0
    for milliseconds in sorted(histogram, reverse=True):
        counted += histogram[milliseconds]
        if total - counted <= within:
            return milliseconds
    return 0
