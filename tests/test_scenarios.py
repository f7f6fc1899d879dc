"""Every scenario on every backend: the broken app shows its verdict, the fixed app does not.

Each verdict is also recomputed from the raw observations stored in its result.json, so a
verdict cannot disagree with what was seen. Scenarios that depend on which worker or thread
serves a step run twice here and once in their notebook (tests/test_notebooks.py, which asserts
the same verdicts), and must give the same verdict each time; the others run once here and once
in their notebook.

The last run of every cause has the stale-data doctor installed in the app, broken or fixed
alike (`make doctor`): the verdict must not change, the broken app must be reported with its
own cause wherever the bug shows, and the fixed app must be reported clean.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lab.harness.doctor_matrix import unexpected_causes
from lab.harness.runner import CellResult, load_expected, run_cell
from scenarios import scenario_modules
from lab.harness.verdicts import FRESH, NOT_APPLICABLE

MODULES = scenario_modules()
# Causes whose steps are steered across gunicorn workers or threads: run 3 times each.
STEERED = {"uncommitted", "shared_session", "scoped_session_not_removed", "scoped_session_wrong_scope",
           "pool_across_fork", "long_transaction"}
CELLS = [(cause, app) for cause, module in MODULES.items() for app in module.CAUSE.app_modules]


def test_every_cause_and_myth_of_the_design_has_a_scenario() -> None:
    required = {"global_cache", "shared_session", "uncommitted", "scoped_session_not_removed",
                "scoped_session_wrong_scope", "pool_across_fork", "long_transaction",
                "background_app_context", "http_cache", "offset_pagination", "lost_update",
                "myth_expire_all", "myth_remove", "myth_flush",
                "identity_map", "import_time", "session_cookie_snapshot", "sqlite_file_replaced", "replica_lag",
                "enqueue_before_commit", "browser_cache", "prefork_refresher",
                "cache_key_mismatch"}
    assert required <= set(MODULES), f"missing scenarios: {sorted(required - set(MODULES))}"
    assert set(MODULES) <= set(load_expected()), "every scenario needs its cells in expected_matrix.json"


@pytest.mark.parametrize(("cause", "app"), CELLS)
def test_scenario_gives_the_expected_verdict(cause: str, app: str, backend: str, db_url: str) -> None:
    # db_url: the backend answers (or the test skips/fails as conftest decides).
    expected = load_expected()[cause][app][backend]
    kind = MODULES[cause].CAUSE.kind
    # The plain run of every cell is also made by its cause's notebook (tests/test_notebooks.py
    # asserts the same expected verdicts), so a cause that is not steered runs here once, with
    # the doctor (two runs of each cell in the suite), and a steered one twice, the second with
    # the doctor (three runs in the suite).
    runs = 2 if cause in STEERED else 1
    lines: list[str] = []
    for run in range(runs):
        with_doctor = kind == "cause" and run == runs - 1
        with pytest.MonkeyPatch.context() as patch:
            if with_doctor:
                patch.setenv("LAB_DOCTOR", "1")
            cell = run_cell(MODULES[cause], app, backend, lines.append)
        assert cell.verdict == expected["verdict"], "\n".join([cell.proof, *lines[-60:]])
        if cell.verdict == NOT_APPLICABLE:
            assert expected.get("reason"), "an N/A cell must say why"
            return
        assert cell.proof, "every verdict comes with a proof"
        stored = json.loads(Path(cell.path or "").read_text())
        recomputed = MODULES[cause].judge(stored["observations"])
        assert (recomputed.verdict, recomputed.proof) == (stored["verdict"], stored["proof"])
        assert stored["schema_version"] == 1 and stored["backend"] == backend and stored["timeline"]
        assert (Path(cell.path or "").parent.parent / "latest" / "result.json").exists()
        if with_doctor:
            assert_doctor_findings(cell, stored)


def assert_doctor_findings(cell: CellResult, stored: dict) -> None:  # type: ignore[type-arg]
    found = [f["cause"] for f in stored["doctor"]["findings"]]
    proofs = "\n".join(f"{f['cause']}: {f['proof']}" for f in stored["doctor"]["findings"])
    if cell.app == "fixed":
        assert found == [], f"the doctor reported the fixed app:\n{proofs}"
    elif cell.verdict != FRESH:
        assert cell.cause in found, f"the bug showed ({cell.verdict}) but the doctor reported:\n{proofs or 'nothing'}"
        first = next(f for f in stored["doctor"]["findings"] if f["cause"] == cell.cause)
        assert first["proof"] and first["evidence"]["pid"], first
        assert unexpected_causes(cell.cause, found) == [], f"the doctor reported more than the bug:\n{proofs}"


def test_readme_matrix_is_the_expected_matrix() -> None:
    """The README's table was generated from a real run (make readme); the scenario tests above
    check fresh runs against expected_matrix.json, so README == expected means README == fresh."""
    from lab.harness.runner import readme_matrix_cells

    expected = {(cause, app, backend): cell["verdict"] for cause, apps in load_expected().items()
                for app, backends in apps.items() for backend, cell in backends.items()}
    assert readme_matrix_cells() == expected, "README matrix is out of date: run `make readme`"


def test_readme_matrix_is_the_latest_real_run_where_one_exists() -> None:
    """Each README cell against the latest stored run of that cell (results/.../latest), where
    this checkout has one: `make readme` writes what a run found, so a later run that found
    something else (the code changed, or a cell is unstable) makes the table wrong."""
    from lab.harness.runner import RESULTS_DIR, readme_matrix_cells

    differ = []
    for (cause, app, backend), verdict in readme_matrix_cells().items():
        latest = RESULTS_DIR / backend / cause / app / "latest" / "result.json"
        if latest.exists():
            found = json.loads(latest.read_text())
            if found["verdict"] != verdict:
                differ.append(f"{cause} | {app} | {backend}: README {verdict}, latest run "
                              f"({found['started_at']}) {found['verdict']}: {found['proof']}")
    assert not differ, "README matrix differs from the latest runs (run `make readme`):\n" + "\n".join(differ)


def test_cli_names_the_valid_choices(capsys: pytest.CaptureFixture[str]) -> None:
    from scenarios.__main__ import main

    assert main(["--cause", "no_such_cause"]) == 2
    err = capsys.readouterr().err
    assert "unknown cause no_such_cause" in err and "uncommitted" in err
    assert main(["--db", "oracle"]) == 2
    assert "sqlite, postgresql, mariadb, all" in capsys.readouterr().err


def test_cli_names_the_url_and_make_services_when_a_server_is_down(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from lab.harness.server import free_port
    from scenarios.__main__ import main

    monkeypatch.setenv("LAB_TEST_POSTGRESQL_URL", f"postgresql+psycopg://lab:lab@127.0.0.1:{free_port()}/lab_test")
    assert main(["--db", "postgresql", "--cause", "uncommitted"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "127.0.0.1" in err and "make services" in err


def test_readme_doctor_table_names_each_cause_and_finds_the_fixed_app_clean() -> None:
    """The README's doctor table (generated by `python -m scenarios --db all --doctor --readme`)
    says what the scenario tests above assert on every fresh run."""
    from lab.harness.runner import DOCTOR_END, DOCTOR_START, README

    text = README.read_text()
    rows = [line for line in text[text.index(DOCTOR_START):text.index(DOCTOR_END)].splitlines()
            if line.startswith("| ") and not line.startswith("| cause")]
    causes = {name for name, module in MODULES.items() if module.CAUSE.kind == "cause"}
    assert {row.split("|")[1].strip() for row in rows} == causes
    expected = load_expected()
    for row in rows:
        cause, *cells = [cell.strip() for cell in row.strip().strip("|").split("|")]
        assert len(cells) == 3, row
        for backend, cell in zip(("sqlite", "postgresql", "mariadb"), cells):
            if expected[cause]["broken"][backend]["verdict"] == NOT_APPLICABLE:  # the cause cannot exist there
                assert cell == NOT_APPLICABLE, row
                continue
            found, fixed = cell.split(" · fixed: ")
            assert cause in found.split(", ") and fixed == "clean", row
