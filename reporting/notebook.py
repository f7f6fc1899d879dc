"""What the notebooks call: run a scenario live, show its timeline and diff, list backends.

Notebooks stay short and honest this way: every figure or verdict they show comes from a run
made while the notebook executes, through the same runner as `make reproduce`.
"""

from __future__ import annotations

import subprocess

from lab import databases
from lab.engine import REPO_ROOT
from lab.harness.runner import CellResult, load_expected, run_cell
from reporting.claims import Seen
from scenarios import scenario_modules


def backends_here() -> list[str]:
    """SQLite, plus each server whose LAB_TEST_* variable is set and that answers; says why not."""
    from scenarios.__main__ import check_backend

    found = ["sqlite"]
    for backend in databases.BACKENDS[1:]:
        try:
            check_backend(backend)
        except databases.BackendUnavailable as error:
            if backend in databases.required_backends():
                raise
            print(f"not run on {backend}: {error}")
            continue
        found.append(backend)
    print("backends in this run:", ", ".join(found))
    return found


def run(cause: str, backends: list[str], timeline: bool = True) -> list[CellResult]:
    """Run one cause (broken and fixed, or a myth's claim and cure) on each backend, live."""
    module = scenario_modules()[cause]
    cells = []
    for backend in backends:
        for app in module.CAUSE.app_modules:
            cells.append(run_cell(module, app, backend, print if timeline else (lambda _line: None)))
    return cells


def seen(cells: list[CellResult]) -> list[Seen]:
    """The cells as the claims read them (reporting/claims.py): verdicts and observations."""
    return [Seen(cell.cause, cell.app, cell.backend, cell.verdict, cell.staleness, observations(cell)) for cell in cells]


def verdicts(cells: list[CellResult]) -> dict[tuple[str, str], str]:
    """(app, backend) -> verdict."""
    return {(cell.app, cell.backend): cell.verdict for cell in cells}


def expected_verdicts(cause: str, backends: list[str]) -> dict[tuple[str, str], str]:
    cells = load_expected()[cause]
    return {(app, backend): cells[app][backend]["verdict"] for app in cells for backend in backends}


def summary(cells: list[CellResult]) -> None:
    """One line per cell: app, backend and server version, verdict, proof."""
    for cell in cells:
        print(f"{cell.app:<7} {cell.server_version or cell.backend:<20} {cell.verdict:<18} {cell.proof}")


def show_diff(cause: str) -> None:
    """The lesson: `diff -u fixed/app.py broken/<cause>.py`, exactly as `make diff` prints it."""
    diff = subprocess.run(["diff", "-u", "fixed/app.py", f"broken/{cause}.py"], cwd=REPO_ROOT,
                          capture_output=True, text=True).stdout
    print(diff)


def show_source(*objects: object) -> None:
    """Print the source of functions or classes (a myth's claim and cure steps, as the scenario runs them)."""
    import inspect

    for obj in objects:
        print(inspect.getsource(obj))  # type: ignore[arg-type]


def observations(cell: CellResult) -> dict:
    """The raw observations a cell's verdict was computed from (its stored result.json)."""
    import json
    from pathlib import Path

    if cell.path is None:  # an N/A cell is not run, so it stores nothing
        return {}
    return dict(json.loads(Path(cell.path).read_text())["observations"])
