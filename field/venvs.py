"""One venv per app, from its own lock, under var/field/venvs/<app> (git-ignored, reused while
the lock is unchanged). The doctor and the field's runtime are made importable there by a
`.pth` file naming this checkout's `doctor/` and root (appended to sys.path, after the app's
own site-packages, so no name of ours shadows one of the app's)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from .corpus import REPO_ROOT, App

VENVS = REPO_ROOT / "var" / "field" / "venvs"
PIP = ["--quiet", "--disable-pip-version-check"]


def python_of(app: App) -> Path:
    return VENVS / app.name / "bin" / "python"


def _lock_digest(app: App) -> str:
    return hashlib.sha256(app.lock.read_bytes()).hexdigest()


def _site_packages(python: Path) -> Path:
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


def ensure(app: App, log: Callable[[str], None] = print) -> Path:
    """The app's venv, built from its lock unless it already matches it; returns its python."""
    if not app.lock.exists():
        raise SystemExit(f"{app.lock} is missing: run `python -m field lock --app {app.name}`")
    home = VENVS / app.name
    marker = home / ".installed"
    if marker.exists() and marker.read_text() == _lock_digest(app) and python_of(app).exists():
        return python_of(app)
    started = time.monotonic()
    log(f"{app.name}: building {home} from {app.lock.relative_to(REPO_ROOT)}")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(home)], check=True)
    subprocess.run([str(python_of(app)), "-m", "pip", "install", *PIP, "-r", str(app.lock)], check=True)
    (_site_packages(python_of(app)) / "stale-doctor-field.pth").write_text(f"{REPO_ROOT / 'doctor'}\n{REPO_ROOT}\n")
    marker.write_text(_lock_digest(app))
    log(f"{app.name}: installed in {time.monotonic() - started:.0f} s")
    return python_of(app)


def lock(app: App) -> None:
    """Resolve the app's distribution (and gunicorn, which serves it) in a new venv; pin what came."""
    scratch = VENVS / f".lock-{app.name}"
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(scratch)], check=True)
    python = scratch / "bin" / "python"
    subprocess.run([str(python), "-m", "pip", "install", *PIP, app.distribution, "gunicorn", *app.extras], check=True)
    frozen = subprocess.run([str(python), "-m", "pip", "freeze", "--exclude-editable"], check=True,
                            capture_output=True, text=True).stdout
    app.lock.parent.mkdir(parents=True, exist_ok=True)
    header = (f"# {app.name}: the exact pins of `pip install {' '.join((app.distribution, 'gunicorn', *app.extras))}` "
              f"(python -m field lock --app {app.name}); never the lab's lock\n")
    app.lock.write_text(header + frozen)
    subprocess.run(["rm", "-rf", str(scratch)], check=True)

