"""python -m loadtests: the same locust load against a broken variant and the fixed app.

Each app runs on its own database seeded identically, under gunicorn shaped as production
would run that cause, with readers browsing the list (HTML and API, filters, pages) and
writers editing labels and contacts with the version they saw. The checker judges the merged
request log: stale reads (a row older than an edit acknowledged before the read was sent),
lost writes (duplicate acknowledged versions, or a final database state that is not the
highest acknowledged edit) and errors (5xx, connection failures, exceptions). The fixed app
also gets its list page's requests/s beside /_lab/ping of the same server.

Results: results/<backend>/<cause>/load/<timestamp>/ (results.json, results.csv, table.txt and
raw/: the request logs, locust's JSON, gunicorn logs, the audit), with a `latest` link
(`latest-distributed` for --distributed runs). Exit status 0 when both apps
ran to the end (the figures are information, not a pass/fail).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys

from lab import databases
from lab.harness.runner import load_expected
from loadtests import runner, table


def parse_args(argv: list[str]) -> argparse.Namespace:
    defaults = runner.LoadOptions()
    parser = argparse.ArgumentParser(prog="python -m loadtests", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cause", required=True, help="a cause with a broken/<cause>.py")
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql, mariadb or all (default: sqlite)")
    parser.add_argument("--users", type=int, default=defaults.users, help=f"concurrent users (default {defaults.users})")
    parser.add_argument("--duration", type=int, default=defaults.duration,
                        help=f"seconds of load per app (default {defaults.duration})")
    parser.add_argument("--reader-weight", type=int, default=defaults.reader_weight,
                        help=f"relative number of readers (default {defaults.reader_weight})")
    parser.add_argument("--writer-weight", type=int, default=defaults.writer_weight,
                        help=f"relative number of writers (default {defaults.writer_weight})")
    parser.add_argument("--wait-min", type=float, default=defaults.wait_min, help="think time, s (default %(default)s)")
    parser.add_argument("--wait-max", type=float, default=defaults.wait_max, help="think time, s (default %(default)s)")
    parser.add_argument("--size", type=int, default=defaults.size, help="seeded transactions (default %(default)s)")
    parser.add_argument("--ratio-seconds", type=int, default=defaults.ratio_seconds,
                        help="seconds of each list-page / ping phase on the fixed app; 0 skips (default %(default)s)")
    parser.add_argument("--max-requests", type=int, default=defaults.max_requests,
                        help="requests per locust process after which its users stop (default %(default)s)")
    parser.add_argument("--distributed", action="store_true", help="a locust master and two workers on 127.0.0.1")
    parser.add_argument("--doctor", action="store_true",
                        help="install the stale-data doctor in the apps (make doctor): a finding in the fixed app fails the run")
    parser.add_argument("--app", choices=("broken", "fixed"), action="append",
                        help="run only this app (repeatable; default both)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.duration < 1 or args.reader_weight < 0 or args.writer_weight < 0 \
            or args.reader_weight + args.writer_weight == 0 or not 0 <= args.wait_min <= args.wait_max:
        parser.error("users and duration must be >= 1, weights >= 0 (not both 0), 0 <= wait-min <= wait-max")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.doctor:
        os.environ["LAB_DOCTOR"] = "1"
    modules = runner.app_modules(args.cause)
    backends = list(databases.BACKENDS) if args.db == "all" else [args.db]
    if any(b not in databases.BACKENDS for b in backends):
        print(f"--db must be one of {', '.join(databases.BACKENDS)} or all", file=sys.stderr)
        return 2
    options = runner.LoadOptions(
        users=args.users, duration=args.duration, reader_weight=args.reader_weight,
        writer_weight=args.writer_weight, wait_min=args.wait_min, wait_max=args.wait_max, size=args.size,
        ratio_seconds=args.ratio_seconds, distributed=args.distributed, max_requests=args.max_requests,
    )
    apps = [app for app in ("broken", "fixed") if not args.app or app in args.app]
    status = 0
    expected = load_expected().get(args.cause, {}).get("broken", {})
    for backend in backends:
        if expected.get(backend, {}).get("verdict") == "N/A":  # the cause cannot exist there: nothing to load
            print(f"[{args.cause} | {backend}] N/A, no load: {expected[backend].get('reason', '')}")
            continue
        started = dt.datetime.now(dt.timezone.utc)
        run_dir = runner.results_dir(backend, args.cause, started, options.distributed)
        runs = [runner.run_app(args.cause, app, modules[app], backend, options, run_dir / "raw", print,
                               ratio=app == "fixed") for app in apps]
        text = table.side_by_side(backend, args.cause, options, runs)
        rows = table.csv_rows(backend, args.cause, options, runs)
        (run_dir / "table.txt").write_text(text + "\n")
        (run_dir / "results.csv").write_text(table.to_csv(rows))
        (run_dir / "results.json").write_text(json.dumps({
            "schema_version": 1, "kind": "load", "cause": args.cause, "backend": backend,
            "started_at": started.isoformat(), "options": options.__dict__,
            "apps": {run.app: run.to_dict() for run in runs},
        }, indent=2, default=str) + "\n")
        runner.link_latest(run_dir, options.distributed)
        print("\n" + text + f"\n(results: {run_dir.relative_to(runner.REPO_ROOT) if run_dir.is_relative_to(runner.REPO_ROOT) else run_dir})\n")
        status |= any(run.failure for run in runs)
        status |= any(run.app == "fixed" and run.doctor for run in runs)
    return status


if __name__ == "__main__":
    sys.exit(main())
