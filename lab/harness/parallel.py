"""Run independent cells side by side: one lane per database server, SQLite cells shared out.

A cell (cause x app x backend) owns its database, its files, its ports and its app servers,
so cells never see each other's data. Cells on one PostgreSQL or MariaDB server still share
that server's CPU, locks and connection limit, so they run one after another in that server's
lane; SQLite cells share nothing and are dealt round-robin over the lanes left. Each lane is a
process of its own (a broken variant's module-level state, the doctor's monitor and Flask apps
are per process), and its output lines go to the terminal as they come, tagged by lane.
"""

from __future__ import annotations

import multiprocessing
import sys
from concurrent.futures import ProcessPoolExecutor
from types import ModuleType
from typing import Callable

from lab.harness.runner import CellResult, run_cell

Modules = Callable[[], dict[str, ModuleType]]  # the scenario modules by cause (a top-level function: lanes import it)

Cell = tuple[str, str, str]  # cause, app, backend


def lanes(cells: list[Cell], jobs: int) -> list[list[Cell]]:
    """Cells grouped so that no two cells of one server backend are in different lanes; with
    `jobs` 1, one lane of every cell in turn."""
    if jobs <= 1:
        return [cells] if cells else []
    by_server: dict[str, list[Cell]] = {}
    embedded: list[Cell] = []
    for cell in cells:
        (embedded if cell[2] == "sqlite" else by_server.setdefault(cell[2], [])).append(cell)
    grouped = list(by_server.values())
    spare = max(1, jobs - len(grouped)) if embedded else 0
    grouped += [embedded[start::spare] for start in range(spare)]
    return [lane for lane in grouped if lane]


def _run_lane(lane: list[Cell], tag: str, show_timeline: bool, find_modules: Modules) -> list[CellResult]:
    modules = find_modules()

    def echo(line: str) -> None:
        if show_timeline or line.startswith(("[", "  =>")):
            print(f"{tag} {line}" if tag else line, flush=True)

    return [run_cell(modules[cause], app, backend, echo) for cause, app, backend in lane]


def run_cells(cells: list[Cell], jobs: int, show_timeline: bool, find_modules: Modules,
              echo: Callable[[str], None] = print) -> list[CellResult]:
    """Every cell's result, in the order of `cells`; lanes run in parallel when jobs > 1.
    `find_modules` gives the scenario module of each cause (`scenarios.scenario_modules`: the
    harness does not import scenarios/, which stand on it)."""
    groups = lanes(cells, jobs)
    if len(groups) <= 1:
        return _run_lane(cells, "", show_timeline, find_modules) if cells else []
    names = [lane[0][2] for lane in groups]
    names = [f"{name}-{names[:i].count(name) + 1}" if names.count(name) > 1 else name for i, name in enumerate(names)]
    width = max(len(name) for name in names)
    tags = [f"{name:<{width}} |" for name in names]
    echo(f"{len(cells)} cells in {len(groups)} lanes side by side: "
         + ", ".join(f"{name} ({len(lane)} cells)" for name, lane in zip(names, groups)))
    sys.stdout.flush()
    # fork: the children start with the scenario modules already imported, and nothing here
    # has started a thread or opened a connection yet.
    with ProcessPoolExecutor(len(groups), mp_context=multiprocessing.get_context("fork")) as pool:
        futures = [pool.submit(_run_lane, lane, tag, show_timeline, find_modules) for lane, tag in zip(groups, tags)]
        done = {cell: result for lane, future in zip(groups, futures) for cell, result in zip(lane, future.result())}
    return [done[cell] for cell in cells]
