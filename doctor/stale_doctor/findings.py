"""A finding (a cause the doctor saw, its one-line proof, its evidence) and where it goes."""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import threading
from collections import deque
from dataclasses import asdict, dataclass, field
from typing import Any

from .causes import CAUSES
from .config import Settings

SCHEMA_VERSION = 1


class StaleDataFound(AssertionError):
    """Raised in mode "raise" (and by the pytest plugin) when the doctor made a finding."""

    def __init__(self, findings: list["Finding"]) -> None:
        self.findings = findings
        super().__init__("\n".join(f"{f.cause}: {f.proof}" for f in findings))


@dataclass
class Finding:
    cause: str
    proof: str  # one line, plain words
    evidence: dict[str, Any]
    subject: str  # what it is about (a session token, a connection, an endpoint): dedupes repeats
    occurrences: int = 1
    models: tuple[str, ...] = ()
    at: str = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds"))

    def __post_init__(self) -> None:
        if self.cause not in CAUSES:
            raise ValueError(f"unknown cause {self.cause!r}")

    def as_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["models"] = list(self.models)
        data["schema_version"] = SCHEMA_VERSION
        return data


class Sink:
    """Sends findings to the `stale_doctor` logger, a JSONL file and (mode collect) a list.

    Repeats of one finding (same cause and subject) are counted; a line is written for the 1st,
    10th, 100th, ... occurrence so a busy app does not flood its log, and `occurrences` says how
    many were seen.
    """

    MAX_COLLECTED = 10_000
    MAX_SUBJECTS = 10_000

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[str, str], int] = {}
        self.collected: deque[Finding] = deque(maxlen=self.MAX_COLLECTED)
        self.listeners: list[Any] = []  # callables (the pytest plugin)

    def emit(self, finding: Finding, settings: Settings) -> bool:
        """True when the finding was new or a logged milestone; False when only counted or allowed."""
        if settings.allowed(finding.cause, finding.evidence.get("request", {}).get("endpoint"), finding.models):
            return False
        key = (finding.cause, finding.subject)
        with self._lock:
            if len(self._counts) >= self.MAX_SUBJECTS and key not in self._counts:
                self._counts.clear()  # bounded memory; counting starts again
            count = self._counts.get(key, 0) + 1
            self._counts[key] = count
        finding.occurrences = count
        for listener in list(self.listeners):
            listener(finding)
        if count > 1 and not _milestone(count):
            return False
        if settings.mode == "collect" or count == 1:
            self.collected.append(finding)
        logging.getLogger(settings.logger).warning("stale-doctor %s: %s", finding.cause, finding.proof,
                                                   extra={"stale_doctor": finding.as_json()})
        if settings.file:
            line = json.dumps(finding.as_json(), default=str) + "\n"
            # O_APPEND: short lines from several gunicorn workers do not interleave.
            fd = os.open(settings.file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
        return True

    def reset_counts(self) -> None:
        """Forget the repeat counts, so the next finding of each (cause, subject) is new again."""
        with self._lock:
            self._counts.clear()

    def reset_after_fork(self) -> None:
        self._lock = threading.Lock()


def _milestone(count: int) -> bool:
    while count % 10 == 0:
        count //= 10
    return count == 1


def read_file(path: str) -> list[dict[str, Any]]:
    """Findings from a JSONL file; lines that are not findings are skipped."""
    found = []
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("cause") in CAUSES:
                found.append(record)
    return found
