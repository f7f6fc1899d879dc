"""python -m scenarios: reproduce every cause of stale data and print the verdict matrix.

Each scenario runs the broken and the fixed app (myths: the claim and the cure) on each
chosen backend, prints its timeline, stores results/<backend>/<cause>/<app>/<time>/result.json
and compares the verdicts with scenarios/expected_matrix.json. Exit status 0 only when every
cell matches; an INCONCLUSIVE cell fails the run.
"""

from __future__ import annotations

import argparse
import os
import sys

from sqlalchemy import create_engine, text

from lab import databases
from lab.harness.doctor_matrix import doctor_problems, doctor_table
from lab.harness.parallel import run_cells
from lab.harness.runner import (DOCTOR_END, DOCTOR_START, MATRIX_END, MATRIX_START, CellResult, compare, matrices,
                                write_readme_matrix)
from scenarios import scenario_modules


def parse_args(argv: list[str], causes: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m scenarios",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="causes and myths: " + ", ".join(causes)
        + ".\nServers come from LAB_TEST_POSTGRESQL_URL and LAB_TEST_MARIADB_URL (`make services` creates them).",
    )
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql, mariadb or all (default: sqlite)")
    parser.add_argument("--cause", action="append", default=[], help="run only this cause or myth (repeatable; comma-separated)")
    parser.add_argument("--app", choices=("broken", "fixed", "claim", "cure"), help="run only this side")
    parser.add_argument("--timeline", action="store_true", help="print every step (default when --cause is given)")
    parser.add_argument("--doctor", action="store_true",
                        help="install the stale-data doctor in every app (broken and fixed alike), run the causes "
                             "and print what it found beside each verdict (make doctor)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="lanes run side by side: one per database server, SQLite cells shared over the rest "
                             "(default: the number of CPUs; 1 runs every cell in turn)")
    parser.add_argument("--readme", action="store_true",
                        help="after a full run on all backends with every cell as expected, write the matrix into README.md")
    return parser.parse_args(argv)


def check_backend(backend: str) -> None:
    """Fail early with one line when a server backend cannot be used."""
    if backend == "sqlite":
        return
    url = databases.server_url(backend)
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:
        raise databases.BackendUnavailable(
            f"{backend}: cannot reach {url.render_as_string(hide_password=True)} "
            f"({type(error).__name__}); start it with `make services`"
        ) from None
    finally:
        engine.dispose()


def main(argv: list[str] | None = None) -> int:
    modules = scenario_modules()
    args = parse_args(sys.argv[1:] if argv is None else argv, list(modules))
    backends = list(databases.BACKENDS) if args.db == "all" else [args.db]
    wanted = [name.strip() for item in args.cause for name in item.split(",") if name.strip()] or list(modules)
    bad_backends = [b for b in backends if b not in databases.BACKENDS]
    bad_causes = [c for c in wanted if c not in modules]
    if bad_backends:
        print(f"unknown DB {', '.join(bad_backends)}; choose one of: {', '.join(databases.BACKENDS)}, all", file=sys.stderr)
        return 2
    if bad_causes:
        print(f"unknown cause {', '.join(bad_causes)}; choose from: {', '.join(modules)}", file=sys.stderr)
        return 2
    try:
        for backend in backends:
            check_backend(backend)
    except databases.BackendUnavailable as error:
        print(error, file=sys.stderr)
        return 2

    if args.doctor:
        os.environ["LAB_DOCTOR"] = "1"  # read by the harness: every app it starts gets the doctor
        wanted = [name for name in wanted if modules[name].CAUSE.kind == "cause"]
    show_timeline = args.timeline or bool(args.cause)
    cells = [(name, app, backend) for backend in backends for name in wanted
             for app in modules[name].CAUSE.app_modules if not args.app or app == args.app]
    results: list[CellResult] = run_cells(cells, args.jobs, show_timeline, scenario_modules)

    tables = matrices(results, backends, {name: module.CAUSE.kind for name, module in modules.items()})
    print("\n" + tables)
    problems = compare(results)
    if args.doctor:
        tables = doctor_table(results, backends)
        print("\nWhat the doctor found (broken app · fixed app):\n\n" + tables)
        problems += doctor_problems(results)
    if problems:
        print("\nNOT AS EXPECTED:\n  " + "\n  ".join(problems))
        return 1
    print(f"\nall {len(results)} cells as expected (scenarios/expected_matrix.json)"
          + (": the doctor named each broken app's cause and found the fixed app clean" if args.doctor else ""))
    if args.readme:
        if args.cause or args.app or len(backends) < len(databases.BACKENDS):
            print("--readme needs a full run: no --cause or --app, and --db all", file=sys.stderr)
            return 2
        write_readme_matrix(tables, (DOCTOR_START, DOCTOR_END) if args.doctor else (MATRIX_START, MATRIX_END))
        print("README.md " + ("doctor table" if args.doctor else "matrix") + " updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
