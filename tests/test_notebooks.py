"""Every notebook runs top to bottom, headless, on every backend this run has (CI: all three).

A temporary copy is executed (the committed notebook with its outputs is left alone); each
notebook has a cell that asserts the verdict it explains, so a notebook whose story no longer
matches what the scenario shows fails here.
"""

from __future__ import annotations

import pytest

from notebooks.build import build, execute, names


def test_every_cause_has_its_notebook() -> None:
    from scenarios import scenario_modules

    wanted = {"00_overview", "long_operations", "claims_check", *scenario_modules()}
    assert wanted <= set(names()), f"missing notebooks: {sorted(wanted - set(names()))}"


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", names())
def test_notebook_runs_and_its_assertions_hold(name: str) -> None:
    notebook = build(name)
    assert any("assert " in cell.source for cell in notebook.cells if cell.cell_type == "code"), (
        f"{name} has no cell asserting what it explains")
    execute(notebook)  # raises CellExecutionError with the failing cell's traceback


def test_every_cause_notebook_runs_its_cells_and_asserts_the_expected_verdicts() -> None:
    """tests/test_scenarios.py runs a cause that is not steered once, with the doctor; the plain
    run of each of its cells is its notebook's, which must check every verdict against the
    expected matrix."""
    from scenarios import scenario_modules

    for cause, module in scenario_modules().items():
        if module.CAUSE.kind != "cause":
            continue
        code = "\n".join(cell.source for cell in build(cause).cells if cell.cell_type == "code")
        assert f'notebook.run("{cause}", backends' in code, f"notebooks/{cause} does not run its scenario"
        assert f'== notebook.expected_verdicts("{cause}", backends)' in code, (
            f"notebooks/{cause} does not assert its verdicts against the expected matrix")
