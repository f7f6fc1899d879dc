"""The versions users have: the doctor on the oldest and the newest Flask, Flask-SQLAlchemy and
SQLAlchemy it supports, each in a venv of its own built from a small lock (as nox or tox
matrices do), never the lab's. `tests/doctor_versions/check.py` runs the same app in each: every
cause's bug found with its own name and nothing else, the clean app with no finding at all.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from stale_doctor import StaleDoctor, extension

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "tests" / "doctor_versions"
VENVS = ROOT / "var" / "doctor-versions"
EXPECTED_VERSIONS = {"oldest": {"flask": "2.2.5", "flask-sqlalchemy": "2.5.1", "sqlalchemy": "1.4.54"},
                     "newest": {"flask": "3.1.3", "flask-sqlalchemy": "3.1.1", "sqlalchemy": "2.1.9"}}


def venv_of(name: str) -> Path:
    """The venv of one lock, built once and reused while the lock is unchanged; returns its python."""
    lock = LOCKS / f"{name}.lock"
    home = VENVS / name
    python = home / "bin" / "python"
    marker = home / ".installed"
    digest = hashlib.sha256(lock.read_bytes()).hexdigest()
    if not (marker.exists() and marker.read_text() == digest and python.exists()):
        subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r", str(lock)],
                       check=True)
        purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                 check=True, capture_output=True, text=True).stdout.strip()
        (Path(purelib) / "stale-doctor.pth").write_text(f"{ROOT / 'doctor'}\n")  # the doctor only, not the lab
        marker.write_text(digest)
    return python


@pytest.mark.parametrize("name", sorted(EXPECTED_VERSIONS))
def test_every_cause_found_and_the_clean_app_quiet_on_each_supported_version(tmp_path: Path, name: str) -> None:
    python = venv_of(name)
    done = subprocess.run([str(python), str(LOCKS / "check.py"), str(tmp_path)], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["versions"] == EXPECTED_VERSIONS[name]
    found = result.pop("found")
    assert found.pop("clean") == [], found
    assert found == {case: [case] for case in found}, found
    assert len(found) == 9


def test_an_unsupported_version_is_refused_at_init_app_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    from flask import Flask
    from sqlalchemy.orm import sessionmaker

    real = extension.installed_version
    monkeypatch.setattr(extension, "installed_version",
                        lambda name: "1.3.24" if name == "sqlalchemy" else real(name))
    with pytest.raises(RuntimeError) as refused:
        StaleDoctor(Flask(__name__), sessionmaker())
    message = str(refused.value)
    assert "\n" not in message
    assert message.startswith("stale-doctor supports SQLAlchemy >= 1.4") and "this app has SQLAlchemy 1.3.24" in message
