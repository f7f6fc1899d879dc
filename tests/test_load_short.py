"""Seconds of real load: the checker counts what a broken variant does, and nothing on the fixed app.

Each test serves an app under gunicorn on a private, seeded database and runs locust as its own
process (python -m locust; never imported here) through loadtests.runner, exactly as
`make load` does, only shorter and with more writers so that a few seconds hold enough edits.

Variants verified here (chosen because a load shows them on every run, see loadtests/README.md):
- broken/uncommitted: every acknowledged edit is rolled back -> lost writes > 0;
- broken/http_cache: cached list responses outlive acknowledged edits -> stale reads > 0.
The fixed app runs on every backend the `backend` fixture provides: 0 stale, 0 lost, 0 errors.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from loadtests import runner
from loadtests.checker import Report

pytestmark = pytest.mark.slow

SHORT = runner.LoadOptions(users=6, duration=3, reader_weight=2, writer_weight=1, size=300, ratio_seconds=0)


def run_short(cause: str, app: str, backend: str, tmp_path: Path) -> Report:
    module = runner.app_modules(cause)[app]
    result = runner.run_app(cause, app, module, backend, SHORT, tmp_path, echo=lambda _line: None, ratio=False)
    assert result.failure is None, result.failure
    assert result.report is not None
    # Not vacuous: the load really read pages and had edits acknowledged.
    assert result.report.reads >= 10 and result.report.acknowledged >= 1, result.report.summary()
    return result.report


def test_a_load_counts_lost_writes_on_broken_uncommitted(tmp_path: Path) -> None:
    report = run_short("uncommitted", "broken", "sqlite", tmp_path)
    assert report.lost_count >= 1, report.summary()
    # Every acknowledged edit was rolled back: the audit finds each edited row unchanged.
    assert {lost.reason for lost in report.lost_writes} >= {"final_audit"}
    assert report.error_count == 0, report.to_dict()["error_examples"]


def test_a_load_counts_stale_reads_on_broken_http_cache(tmp_path: Path) -> None:
    report = run_short("http_cache", "broken", "sqlite", tmp_path)
    assert report.stale_count >= 1, report.summary()
    assert report.lost_count == 0 and report.error_count == 0, report.to_dict()


def test_the_fixed_app_under_load_has_no_stale_read_lost_write_or_error(
    backend: str, db_url: str, tmp_path: Path  # db_url: skips (or fails, if required) an absent server
) -> None:
    report = run_short("uncommitted", "fixed", backend, tmp_path)
    assert (report.stale_count, report.lost_count, report.error_count) == (0, 0, 0), report.to_dict()
    assert report.rows_edited >= 1


def test_the_doctor_finds_nothing_in_the_fixed_app_under_load(
    backend: str, db_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`make doctor`'s load phase, short: the doctor watches the fixed app under gunicorn 2x4."""
    monkeypatch.setenv("LAB_DOCTOR", "1")
    module = runner.app_modules("uncommitted")["fixed"]
    result = runner.run_app("uncommitted", "fixed", module, backend, SHORT, tmp_path, echo=lambda _line: None, ratio=False)
    assert result.failure is None and result.report is not None, result.failure
    assert result.report.reads >= 10 and result.report.acknowledged >= 1, result.report.summary()
    assert result.doctor == [], [f["proof"] for f in result.doctor or []]


def test_the_doctor_under_load_names_the_broken_apps_cause(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The other side: the same load with the same doctor on broken/uncommitted reports uncommitted."""
    monkeypatch.setenv("LAB_DOCTOR", "1")
    module = runner.app_modules("uncommitted")["broken"]
    result = runner.run_app("uncommitted", "broken", module, "sqlite", SHORT, tmp_path, echo=lambda _line: None, ratio=False)
    assert result.failure is None, result.failure
    assert {f["cause"] for f in result.doctor or []} == {"uncommitted"}
