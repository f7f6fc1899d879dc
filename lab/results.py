"""Where runs keep their results: a folder per run under results/, and a `latest` link beside it.

Scenarios, loads and the benchmark all store runs this way, so notebooks and the report find
the newest of each by the same link.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

RUN_STAMP = "%Y%m%dT%H%M%S.%fZ"


def new_run_dir(folder: Path, started: dt.datetime, suffix: str = "") -> Path:
    """folder/<UTC timestamp><suffix>/, created now."""
    run_dir = folder / (started.strftime(RUN_STAMP) + suffix)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def link_latest(run_dir: Path, name: str = "latest") -> None:
    """Point `<name>` beside `run_dir` at it; atomic, so a reader never sees a missing link."""
    temporary = run_dir.parent / f".{name}-{os.getpid()}-{run_dir.name}"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(run_dir.name)
    temporary.replace(run_dir.parent / name)
