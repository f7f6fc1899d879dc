"""`pip install <this repository>` gives an app the doctor, and only the doctor.

A fresh venv installs the repository root (its pyproject.toml packages doctor/stale_doctor):
flask and sqlalchemy come with it, none of the lab's own dependencies do, the pytest plugin is
registered, and a ten-line app with StaleDoctor(app, db_session) writes its finding.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[1]
STEP_TIMEOUT = 60
NOT_WANTED = ("gunicorn", "locust", "psycopg", "pymysql", "jupyter", "nbclient", "selenium", "matplotlib")

APP = textwrap.dedent('''
    from flask import Flask
    from sqlalchemy import Column, Integer, create_engine
    from sqlalchemy.orm import declarative_base, scoped_session, sessionmaker
    from stale_doctor import StaleDoctor
    Base = declarative_base()
    class Note(Base): __tablename__ = "notes"; id = Column(Integer, primary_key=True)
    engine = create_engine("sqlite:///notes.db"); Base.metadata.create_all(engine)
    db_session = scoped_session(sessionmaker(bind=engine)); app = Flask(__name__); StaleDoctor(app, db_session)
    app.teardown_appcontext(lambda exc=None: db_session.remove())
    app.post("/notes")(lambda: (db_session.add(Note()), db_session.flush(), ("created", 201))[-1])
    assert app.test_client().post("/notes").status_code == 201
''')

CHECK = textwrap.dedent('''
    import json
    from importlib import metadata
    import stale_doctor
    print(json.dumps({
        "file": stale_doctor.__file__,
        "dists": sorted(d.metadata["Name"].lower().replace("_", "-") for d in metadata.distributions()),
        "pytest11": [(e.name, e.value) for e in metadata.entry_points(group="pytest11")],
    }))
''')


def run(argv: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=STEP_TIMEOUT)
    assert result.returncode == 0, f"{argv} failed:\n{result.stdout}\n{result.stderr}"
    return result


def build_leftovers() -> set[Path]:
    return {p for p in (REPO_ROOT / "build", *REPO_ROOT.glob("doctor/*.egg-info"), *REPO_ROOT.glob("*.egg-info"))
            if p.exists()}


def test_pip_install_gives_the_doctor_only(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # The new venv must not see the lab's packages nor its .pth: a clean environment.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PIP_REQUIRE_VIRTUALENV")
           and not k.startswith("STALE_DOCTOR_")}
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    before = build_leftovers()
    run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    python = str(venv / "bin" / "python")
    try:
        run([python, "-m", "pip", "install", "-q", "--timeout", str(STEP_TIMEOUT), str(REPO_ROOT)], tmp_path, env)
    finally:
        for leftover in build_leftovers() - before:  # in-tree build artefacts of this install
            shutil.rmtree(leftover, ignore_errors=True)

    info = json.loads(run([python, "-c", CHECK], tmp_path, env).stdout)
    assert Path(info["file"]).resolve().is_relative_to(venv.resolve()), info["file"]  # the installed copy
    dists = set(info["dists"])
    assert {"stale-doctor", "flask", "sqlalchemy"} <= dists, dists
    assert not {d for d in dists if d.startswith(NOT_WANTED)}, dists
    assert ["stale_doctor.pytest_plugin", "stale_doctor.pytest_plugin"] in info["pytest11"], info["pytest11"]
    listed = run([python, "-m", "pip", "list", "--format=json"], tmp_path, env).stdout
    names = {p["name"].lower() for p in json.loads(listed)}
    assert {"flask", "sqlalchemy", "stale-doctor"} <= names and not {n for n in names if n.startswith(NOT_WANTED)}

    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "app.py").write_text(APP)
    findings = app_dir / "findings.jsonl"
    run([python, "app.py"], app_dir, {**env, "STALE_DOCTOR_FILE": str(findings)})
    records = [json.loads(line) for line in findings.read_text().splitlines() if line.strip()]
    assert [r["cause"] for r in records] == ["uncommitted"], records
    assert "without a commit" in records[0]["proof"]
