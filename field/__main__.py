"""`make doctor-field`: install the corpus, run each app's clean flows and injections, print the tables.

    python -m field [--app NAME ...] [--db sqlite|postgresql|mariadb] [--short] [--readme]
    python -m field lock --app NAME          (re-pin one app's lock)

Each run is `field.runtime.drive` in the app's own venv, in a fresh work folder under
var/field/runs/, with a time limit; its result lands in var/field/results/<app>/<run>.json.
An app runs on the first of its backends unless `--db` names another it supports; on a server
each run gets a private database of its own (`lab.databases`, on the server LAB_TEST_*_URL
names), dropped when the run ends. `--short` is the suite's form: the first app, its clean
flow and three injections.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time

from lab.databases import drop_database, owner_tag, private_database

from . import venvs
from .corpus import BY_NAME, CAUSES, CORPUS, REPO_ROOT, App
from .tables import README, injection_table, precision_table, write_readme

RUNS = REPO_ROOT / "var" / "field" / "runs"
RESULTS = REPO_ROOT / "var" / "field" / "results"
RUN_SECONDS = 180
SHORT_INJECTIONS = ("global_cache", "http_cache", "background_app_context")
GUNICORN_INJECTIONS = ("pool_across_fork", "prefork_refresher")


def run_one(app: App, label: str, *, inject: str | None = None, serve: str = "test",
            backend: str | None = None) -> dict:  # type: ignore[type-arg]
    python = venvs.ensure(app)
    backend = backend or app.backends[0]
    workdir = RUNS / app.name / label
    shutil.rmtree(workdir, ignore_errors=True)
    out = RESULTS / app.name / f"{label}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    command = [str(python), "-m", "field.runtime.drive", "--app", app.name, "--workdir", str(workdir),
               "--out", str(out), "--serve", serve, "--backend", backend, *(["--inject", inject] if inject else [])]
    db_url = None
    if backend != "sqlite":
        db_url = private_database(backend, f"lab_field_{owner_tag('main')}_{app.name}", RUNS)
        command += ["--db-url", db_url]
    started = time.monotonic()
    try:
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=RUN_SECONDS)
        failure = None if done.returncode == 0 and out.exists() else (done.stderr or done.stdout)[-2000:]
    except subprocess.TimeoutExpired:
        failure = f"no result within {RUN_SECONDS} s"
    finally:
        if db_url is not None:
            drop_database(db_url)
    if failure is not None:
        result = {"app": app.name, "inject": inject, "serve": serve, "backend": backend, "failed": failure}
    else:
        result = json.loads(out.read_text())
    result["label"], result["seconds"] = label, round(time.monotonic() - started, 1)
    out.write_text(json.dumps(result, indent=1))
    return result


def run_app(app: App, short: bool, backend: str | None = None) -> list[dict]:  # type: ignore[type-arg]
    results = [run_one(app, "clean", backend=backend)]
    if app.no_gunicorn is None:
        results.append(run_one(app, "clean-gunicorn", serve="gunicorn", backend=backend))
    chosen = SHORT_INJECTIONS if short else tuple(c for c in CAUSES if app.why_not(c) is None)
    for cause in chosen:
        if cause in GUNICORN_INJECTIONS:
            if app.no_gunicorn is None:
                results.append(run_one(app, f"inject-{cause}", inject=cause, serve="gunicorn", backend=backend))
            continue
        results.append(run_one(app, f"inject-{cause}", inject=cause, backend=backend))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m field")
    parser.add_argument("command", nargs="?", default="run", choices=("run", "lock"))
    parser.add_argument("--app", action="append", choices=sorted(BY_NAME))
    parser.add_argument("--db", choices=("sqlite", "postgresql", "mariadb"),
                        help="run each app that supports it on this backend (default: each app's first)")
    parser.add_argument("--short", action="store_true", help="the suite's form: one app, its clean flow, 3 injections")
    parser.add_argument("--readme", action="store_true", help=f"write the tables into {README.name}")
    args = parser.parse_args(argv)
    apps = [BY_NAME[name] for name in args.app] if args.app else list(CORPUS[:1] if args.short else CORPUS)
    if args.command == "lock":
        for app in apps:
            venvs.lock(app)
        return 0
    results = [result for app in apps
               for result in run_app(app, args.short, args.db if args.db in app.backends else None)]
    precision, false_alarms = precision_table(results)
    injections, misses = injection_table(results, apps, short=args.short)
    print("Findings on the clean flows\n\n" + precision + "\n\nInjected causes\n\n" + injections)
    failed = [f"{r['app']} {r['label']}: {r['failed'][-300:]}" for r in results if "failed" in r]
    for line in failed:
        print(f"RUN FAILED: {line}", file=sys.stderr)
    if args.readme and not args.short:
        write_readme(precision, injections)
    print(f"\n{false_alarms} false alarm(s) or unjudged finding(s); {misses} injection(s) missed; "
          f"{len(failed)} run(s) failed")
    return 1 if failed or false_alarms else 0


if __name__ == "__main__":
    sys.exit(main())
