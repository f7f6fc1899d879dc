"""`stale_doctor.report.render` and `flask stale-doctor report`: one block per cause, from JSONL findings."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask, request
from sqlalchemy.orm import scoped_session, sessionmaker
from stale_doctor import CAUSES, StaleDoctor
from stale_doctor.report import render

from tests.doctor_apps.common import Thing, make_engine


def finding(cause: str, subject: str, occurrences: int, at: str, proof: str, *, endpoint: str = "edit",
            method: str = "POST", location: str = "myapp.views:12 in edit") -> dict[str, Any]:
    return {"cause": cause, "subject": subject, "occurrences": occurrences, "at": at, "proof": proof,
            "models": [], "schema_version": 1,
            "evidence": {"request": {"kind": "request", "method": method, "endpoint": endpoint, "path": f"/{endpoint}"},
                         "location": location, "session": "session-1", "pid": 4242}}


def blocks(text: str) -> dict[str, str]:
    """cause -> its block (from its `== cause:` line to the next one)."""
    found: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        if line.startswith("== "):
            name = line[3:].split(":", 1)[0]
            found[name] = ""
        if name is not None:
            found[name] += line + "\n"
    return found


def test_render_one_block_per_cause() -> None:
    findings = [
        # uncommitted: one subject logged at its 1st and 10th occurrence (10 in all), another seen twice (12);
        # http_cache: one subject, its max 3 (15 in all)
        finding("uncommitted", "uncommitted@edit", 1, "2026-01-01T10:00:01", "the FIRST uncommitted proof"),
        finding("uncommitted", "uncommitted@edit", 10, "2026-01-01T10:05:00", "a later uncommitted proof"),
        finding("uncommitted", "uncommitted@create", 2, "2026-01-01T10:03:00", "create proof", endpoint="create",
                location="myapp.views:40 in create"),
        # http_cache: one subject, seen 3 times, first logged line is not first in the file
        finding("http_cache", "cache@listing", 3, "2026-01-01T11:00:00", "a later cache proof", endpoint="listing",
                method="GET", location="myapp.cache:7 in listing"),
        finding("http_cache", "cache@listing", 1, "2026-01-01T09:00:00", "the FIRST cache proof", endpoint="listing",
                method="GET", location="myapp.cache:7 in listing"),
    ]
    text = render(findings, "findings.jsonl")
    assert text.splitlines()[0] == "stale-doctor report: 15 occurrence(s) of 2 cause(s), from findings.jsonl"
    by_cause = blocks(text)
    assert list(by_cause) == ["uncommitted", "http_cache"]  # the most frequent first

    uncommitted = by_cause["uncommitted"]
    assert f"== uncommitted: {CAUSES['uncommitted'].title}" in uncommitted
    assert "seen 12 time(s), 2 distinct subject(s); first at 2026-01-01T10:00:01" in uncommitted  # max 10 + 2
    assert "where: POST edit x2; POST create x1" in uncommitted
    assert "code:  myapp.views:12 in edit x2; myapp.views:40 in create x1" in uncommitted
    assert "first proof: the FIRST uncommitted proof" in uncommitted
    assert "evidence: session=session-1, pid=4242" in uncommitted
    assert f"cure: {CAUSES['uncommitted'].cure}" in uncommitted
    assert "`make uncommitted`" in uncommitted and "notebooks/uncommitted.ipynb" in uncommitted

    cache = by_cause["http_cache"]
    assert "seen 3 time(s), 1 distinct subject(s); first at 2026-01-01T09:00:00" in cache
    assert "where: GET listing x2" in cache
    assert "code:  myapp.cache:7 in listing x2" in cache
    assert "first proof: the FIRST cache proof" in cache
    assert f"cure: {CAUSES['http_cache'].cure}" in cache
    assert "`make http_cache`" in cache
    assert "uncommitted" not in cache


def test_render_a_job_finding() -> None:
    record = finding("background_app_context", "jobend:sync", 1, "2026-01-01T00:00:00", "job proof", location="")
    record["evidence"] = {"job": {"kind": "job", "job": "sync"}}
    block = blocks(render([record], "f"))["background_app_context"]
    assert "where: job sync x1" in block
    assert "code:" not in block


def test_render_no_findings() -> None:
    text = render([], "empty.jsonl")
    assert "no findings" in text
    assert "empty.jsonl" in text
    assert "==" not in text


# ---- the Flask CLI ----------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_doctor_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("STALE_DOCTOR_")]:
        monkeypatch.delenv(key)


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Any]:
    made: list[tuple[StaleDoctor, Any]] = []

    def make(config: dict[str, Any]) -> tuple[Flask, StaleDoctor]:
        engine = make_engine(str(tmp_path / "things.db"))
        db_session = scoped_session(sessionmaker(bind=engine))
        app = Flask(__name__)
        app.config.update(TESTING=True, **config)

        @app.teardown_appcontext
        def remove_session(exc: BaseException | None = None) -> None:
            db_session.remove()

        @app.post("/notes")
        def add_note() -> tuple[str, int]:
            db_session.add(Thing(name=request.form["text"]))
            db_session.flush()  # the bug: flushed, never committed
            return "created", 201

        doctor = StaleDoctor(app, db_session)
        made.append((doctor, engine))
        return app, doctor

    yield make
    for doctor, engine in made:
        doctor.close()  # the listeners are process-wide
        engine.dispose()


def test_cli_report_prints_the_uncommitted_block(make_app: Any, tmp_path: Path) -> None:
    path = tmp_path / "findings.jsonl"
    app, doctor = make_app({"STALE_DOCTOR_FILE": str(path)})
    try:
        assert app.test_client().post("/notes", data={"text": "hi"}).status_code == 201
        assert path.exists(), "the doctor wrote no finding"
        result = app.test_cli_runner().invoke(args=["stale-doctor", "report"])
    finally:
        doctor.close()
    assert result.exit_code == 0, result.output
    assert f"from {path}" in result.output
    block = blocks(result.output)["uncommitted"]
    assert "seen 1 time(s), 1 distinct subject(s)" in block
    assert "where: POST add_note x1" in block
    assert "code:  tests.test_doctor_report:" in block and "in add_note" in block
    assert "first proof: request #" in block and "without a commit" in block
    assert f"cure: {CAUSES['uncommitted'].cure}" in block
    assert "`make uncommitted`" in block


def test_cli_report_missing_file_is_a_usage_error(make_app: Any, tmp_path: Path) -> None:
    app, doctor = make_app({"STALE_DOCTOR_FILE": str(tmp_path / "unused.jsonl")})
    missing = tmp_path / "missing.jsonl"
    try:
        result = app.test_cli_runner().invoke(args=["stale-doctor", "report", "--file", str(missing)])
    finally:
        doctor.close()
    assert result.exit_code == 2, result.output
    assert f"{missing} does not exist" in result.output
    assert "Traceback" not in result.output


def test_cli_report_without_a_file_is_a_usage_error(make_app: Any) -> None:
    app, doctor = make_app({})
    try:
        result = app.test_cli_runner().invoke(args=["stale-doctor", "report"])
    finally:
        doctor.close()
    assert result.exit_code == 2, result.output
    assert "no findings file: set STALE_DOCTOR_FILE (or pass --file)" in result.output
