"""Run one app's flow with the doctor, clean or with one cause injected; write what was found.

    <app venv>/bin/python -m field.runtime.drive --app calibreweb --workdir DIR --out result.json
        [--backend sqlite|postgresql|mariadb --db-url URL] [--inject CAUSE] [--serve test|gunicorn]

The app is built by its own factory (the driver's `build`), then the doctor is installed from
outside: `StaleDoctor().init_app(app, db)` on what the factory returned. Served by the test
client, the flow runs in this process; served by gunicorn (2 workers x 2 threads on a free port
of 127.0.0.1, `field.runtime.wsgi`, --preload for the fork injections), it runs over HTTP and
gunicorn is stopped in a `finally`, whatever happens.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.metadata
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from .driver import Backend, Driver
from .flow import HttpClient, Recorder, Step, StepResult, TestClient
from .inject import INJECTIONS, THRESHOLD_SECONDS, Run

RESULT_SCHEMA = 1


def doctor_environment(driver: Driver, findings: Path) -> dict[str, str]:
    """The doctor's settings in every field run, clean or injected: the same for both."""
    return {"STALE_DOCTOR_FILE": str(findings), "STALE_DOCTOR_APP_PACKAGES": driver.package,
            "STALE_DOCTOR_TRANSACTION_MAX_SECONDS": str(THRESHOLD_SECONDS),
            "STALE_DOCTOR_JOB_MAX_SECONDS": str(THRESHOLD_SECONDS)}


def load_driver(name: str, workdir: Path, backend: Backend) -> Driver:
    module = importlib.import_module(f"field.apps.{name}.driver")
    return module.Driver(workdir, backend)  # type: ignore[no-any-return]


def build_with_doctor(driver: Driver, injection: str | None) -> Run:
    """The app from its own factory, the doctor installed from outside, and the injection's creation step."""
    from stale_doctor import StaleDoctor

    run = Run(driver)
    run.app = driver.build()
    StaleDoctor().init_app(run.app, driver.sessions(run.app))
    chosen = INJECTIONS[injection] if injection else None
    if chosen is not None and chosen.at_creation is not None:
        chosen.at_creation(run)
    return run


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for gunicorn, or a server a driver starts for its run)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_until_up(url: str, process: subprocess.Popen[bytes], seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode} before answering")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers (a 404 or a redirect to the log-in page is an answer)
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"gunicorn did not answer {url} within {seconds:.0f} s")


def serve_and_run(driver: Driver, args: argparse.Namespace, env: dict[str, str], recorder: Recorder) -> list[StepResult]:
    port = free_port()
    injection = INJECTIONS[args.inject] if args.inject else None
    command = [sys.executable, "-m", "gunicorn", "--bind", f"127.0.0.1:{port}", "--workers", "2",
               "--threads", "2", "--worker-class", "gthread", "--graceful-timeout", "5", "--timeout", "60"]
    if injection is not None and injection.at_creation is not None:
        command.append("--preload")  # the fork cases: the app (and what it did at creation) is built in the master
    command.append("field.runtime.wsgi:application")
    log = open(Path(args.workdir) / "gunicorn.log", "ab")
    process = subprocess.Popen(command, env={**os.environ, **env, "FIELD_APP": args.app, "FIELD_WORKDIR": args.workdir,
                                             "FIELD_BACKEND": args.backend, "FIELD_DB_URL": args.db_url or "",
                                             "FIELD_INJECT": args.inject or ""},
                               stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_until_up(base + "/", process)
        # The served app was built and injected in gunicorn (field.runtime.wsgi); here only the
        # steps are taken (the injections served this way change nothing in this process).
        steps = injection.steps(Run(driver)) if injection is not None else driver.flow()
        return recorder.run(HttpClient(base), _logged_in(driver, steps, injection is not None))
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        log.close()


def _logged_in(driver: Driver, steps: list[Step], injected: bool) -> list[Step]:
    """An injection's steps start with the person logged in; the clean flow logs in as its first step."""
    return [Step("log in", driver.login), *steps] if injected else steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m field.runtime.drive")
    parser.add_argument("--app", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--backend", default="sqlite", choices=("sqlite", "postgresql", "mariadb"))
    parser.add_argument("--db-url")
    parser.add_argument("--inject", choices=sorted(INJECTIONS))
    parser.add_argument("--serve", default="test", choices=("test", "gunicorn"))
    args = parser.parse_args(argv)
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    findings = workdir / "findings.jsonl"
    driver = load_driver(args.app, workdir, Backend(args.backend, args.db_url))
    env = doctor_environment(driver, findings)
    os.environ.update(env)
    try:
        driver.prepare()
        recorder = Recorder(findings)
        injection = INJECTIONS[args.inject] if args.inject else None
        result: dict[str, Any] = {"schema": RESULT_SCHEMA, "app": driver.name, "distribution": driver.distribution,
                                  "version": importlib.metadata.version(driver.distribution), "backend": args.backend,
                                  "serve": "gunicorn" if args.serve == "gunicorn" else "test client",
                                  "inject": args.inject, "what": injection.what if injection else None,
                                  "not_applicable": None,
                                  "versions": {name: _version(name) for name in ("flask", "sqlalchemy", "flask-sqlalchemy")}}
        if args.serve == "gunicorn":
            result["steps"] = [step.__dict__ for step in serve_and_run(driver, args, env, recorder)]
        else:
            run = build_with_doctor(driver, args.inject)
            result["not_applicable"] = injection.applies(run) if injection is not None else None
            if result["not_applicable"] is None:
                flow = injection.steps(run) if injection is not None else driver.flow()
                steps = recorder.run(TestClient(run.app), _logged_in(driver, flow, injection is not None))
                result["steps"] = [step.__dict__ for step in steps]
        Path(args.out).write_text(json.dumps(result, indent=1, default=str))
    finally:
        driver.close()  # a server the driver started for the run stops even when a step failed
    return 0


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # An app may leave non-daemon threads of its own running (calibre-web's updater and task
    # threads are stopped by its own server, which the field does not run): the result is
    # written, so the process ends here instead of waiting for them.
    os._exit(code)
