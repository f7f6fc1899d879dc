"""`pytest -p stale_doctor.pytest_plugin --stale-doctor` on a user's suite that never installs StaleDoctor.

The inner suite is a tiny Flask + SQLAlchemy app (a plain scoped_session on SQLite) with one
bug: a POST handler that flushes and never commits (the cause "uncommitted"); its test passes
on its own, because nothing it asserts shows the lost row. The plugin's auto mode must watch
the app anyway. The inner runs are subprocesses: the doctor's monitor is process-wide, and an
in-process run would share it with this one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

pytest_plugins = ["pytester"]

DOCTOR_DIR = Path(__file__).resolve().parents[1] / "doctor"

INNER = '''
from flask import Flask, request
from sqlalchemy import Integer, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, scoped_session, sessionmaker


class Base(DeclarativeBase):
    pass


class Note(Base):
    __tablename__ = "notes"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(String(50))


def create_app(path):
    engine = create_engine(f"sqlite:///{path}")
    Base.metadata.create_all(engine)
    db_session = scoped_session(sessionmaker(bind=engine))
    app = Flask(__name__)
    app.config["TESTING"] = True

    @app.teardown_appcontext
    def remove_session(exc=None):
        db_session.remove()

    @app.post("/notes")
    def add_note():
        db_session.add(Note(text=request.form["text"]))
        db_session.flush()  # the bug: flushed, never committed
        return "created", 201

    @app.post("/good-notes")
    def add_good_note():
        db_session.add(Note(text=request.form["text"]))
        db_session.commit()
        return "created", 201

    @app.get("/notes")
    def count_notes():
        return str(db_session.scalar(select(func.count()).select_from(Note)))

    return app, engine


def test_buggy_note(tmp_path):
    app, engine = create_app(tmp_path / "notes.db")
    try:
        assert app.test_client().post("/notes", data={"text": "hi"}).status_code == 201
    finally:
        engine.dispose()


def test_clean_note(tmp_path):
    app, engine = create_app(tmp_path / "notes.db")
    try:
        client = app.test_client()
        assert client.post("/good-notes", data={"text": "hi"}).status_code == 201
        assert client.get("/notes").text == "1"
    finally:
        engine.dispose()
'''


@pytest.fixture
def inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    # The subprocess runs sys.executable; make stale_doctor importable whether or not the
    # venv's .pth file is there, and keep the user's STALE_DOCTOR_* out of it.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(DOCTOR_DIR), os.environ.get("PYTHONPATH")])))
    for key in [k for k in os.environ if k.startswith("STALE_DOCTOR_")]:
        monkeypatch.delenv(key)
    monkeypatch.delenv("PYTEST_ADDOPTS", raising=False)
    pytester.makepyfile(test_notes=INNER)
    return pytester


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # -p no:cacheprovider: no .pytest_cache; -p no:randomly etc. are not installed here.
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "-rA", *args, timeout=60)


def report_of(result: pytest.RunResult, test: str) -> str:
    """The part of the output from the failure header of `test` to the next header."""
    text = result.stdout.str()
    start = text.find(f"_ {test} _")
    assert start != -1, text
    end = text.find("\n___", start + 1)
    following = [i for i in (end, text.find("\n===", start + 1)) if i != -1]
    return text[start:min(following)] if following else text[start:]


def test_fail_mode_fails_the_buggy_test_only(inner: pytest.Pytester) -> None:
    result = run(inner, "-p", "stale_doctor.pytest_plugin", "--stale-doctor")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(["FAILED test_notes.py::test_buggy_note*"])
    result.stdout.fnmatch_lines(["PASSED test_notes.py::test_clean_note*"])
    failure = report_of(result, "test_buggy_note")
    assert "stale-doctor found" in failure
    assert "uncommitted" in failure
    assert result.ret == pytest.ExitCode.TESTS_FAILED


def test_report_mode_passes_and_lists_the_findings(inner: pytest.Pytester) -> None:
    result = run(inner, "-p", "stale_doctor.pytest_plugin", "--stale-doctor=report")
    result.assert_outcomes(passed=2)
    assert result.ret == pytest.ExitCode.OK
    text = result.stdout.str()
    summary = text[text.index("= stale-doctor ="):] if "= stale-doctor =" in text else ""
    assert summary, text
    assert "== uncommitted:" in summary
    assert "make uncommitted" in summary
    tests_line = next(line for line in summary.splitlines() if line.startswith("tests with findings:"))
    assert tests_line == "tests with findings: test_notes.py::test_buggy_note", tests_line


def test_findings_file_gets_the_finding(inner: pytest.Pytester, tmp_path: Path) -> None:
    path = tmp_path / "findings.jsonl"
    result = run(inner, "-p", "stale_doctor.pytest_plugin", "--stale-doctor=report", "--stale-doctor-file", str(path))
    result.assert_outcomes(passed=2)
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert [r["cause"] for r in records] == ["uncommitted"], records
    finding = records[0]
    assert "without a commit" in finding["proof"]
    assert finding["evidence"]["request"]["endpoint"] == "add_note"
    assert finding["evidence"]["tables"] == ["notes"]


def test_without_the_option_the_plugin_does_nothing(inner: pytest.Pytester) -> None:
    result = run(inner, "-p", "stale_doctor.pytest_plugin")
    result.assert_outcomes(passed=2)
    assert "stale-doctor" not in result.stdout.str()
    assert "uncommitted" not in result.stdout.str()
