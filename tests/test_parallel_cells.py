"""`make reproduce` runs independent cells side by side: one lane per database server, SQLite
cells shared over the spare lanes; the results and verdicts are those of a run in turn."""

from __future__ import annotations

import os
from collections import Counter

from lab.harness.parallel import lanes, run_cells
from lab.harness.runner import load_expected
from scenarios import scenario_modules


def test_a_server_backend_keeps_all_its_cells_in_one_lane() -> None:
    cells = [(cause, app, backend) for backend in ("sqlite", "postgresql", "mariadb")
             for cause in ("a", "b", "c") for app in ("broken", "fixed")]
    grouped = lanes(cells, jobs=4)
    assert sorted(len(lane) for lane in grouped) == [3, 3, 6, 6]
    for lane in grouped:
        assert len({backend for _c, _a, backend in lane}) == 1
    assert Counter(cell for lane in grouped for cell in lane) == Counter(cells)  # each cell once
    # Two CPUs and all backends: the two servers' lanes and one for SQLite.
    assert sorted(len(lane) for lane in lanes(cells, jobs=2)) == [6, 6, 6]
    assert lanes(cells[:6], jobs=1) == [cells[:6]]
    assert lanes(cells, jobs=1) == [cells]  # --jobs 1: every cell in turn, servers' cells too
    assert lanes([], jobs=2) == []


def test_cells_run_in_two_processes_give_the_expected_verdicts_in_order() -> None:
    cells = [("global_cache", "broken", "sqlite"), ("global_cache", "fixed", "sqlite"),
             ("myth_flush", "claim", "sqlite"), ("myth_flush", "cure", "sqlite")]
    said: list[str] = []
    results = run_cells(cells, jobs=2, show_timeline=False, find_modules=scenario_modules, echo=said.append)
    assert [(r.cause, r.app, r.backend) for r in results] == cells
    expected = load_expected()
    assert [r.verdict for r in results] == [expected[c][a][b]["verdict"] for c, a, b in cells]
    assert said == ["4 cells in 2 lanes side by side: sqlite-1 (2 cells), sqlite-2 (2 cells)"]
    # Every result was stored, whichever lane ran it.
    assert all(r.path and os.path.exists(r.path) for r in results)
