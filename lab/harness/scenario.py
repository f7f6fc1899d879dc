"""The context a scenario runs in: its database, its app, its actors and its printed timeline.

A scenario module in `scenarios/` defines
- `CAUSE`: a `Cause` (name, one-line title, how the app must be served);
- `run(s: Scenario) -> dict`: the numbered steps; returns the raw observations;
- `judge(observations: dict) -> Judgement`: the verdict, computed only from the observations
  (a unit test recomputes it from the stored result, so it cannot disagree with what was seen).
"""

from __future__ import annotations

import json
import os
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Engine, create_engine

from lab.engine import configure_engine, engine_options
from lab.harness.server import Actor, GunicornServer


# `make doctor` (LAB_DOCTOR=1): every app a scenario starts, broken or fixed, gets the doctor,
# installed by lab mode's extension hook; the scenario's own steps are unchanged. The job
# threshold is short because a scenario lasts seconds, not hours; "your code" is the lab's.
DOCTOR_ENV = {
    "LAB_EXTENSIONS": "stale_doctor:StaleDoctor",
    "STALE_DOCTOR_APP_PACKAGES": "broken,fixed,lab",
    "STALE_DOCTOR_JOB_MAX_SECONDS": "1",
    "STALE_DOCTOR_PROBE": "1",
}


SCREENSHOTS_VARIABLE = "LAB_SCREENSHOTS"  # "1": scenarios that call Scenario.screenshot take them (make report)
SCREENSHOT_SIZE = (1300, 520)  # the window: the filters and the first rows of the list page


def screenshots_requested() -> bool:
    return os.environ.get(SCREENSHOTS_VARIABLE) == "1"


def doctor_requested() -> bool:
    return os.environ.get("LAB_DOCTOR") == "1"


def doctor_findings(path: Path) -> list[dict[str, Any]]:
    """The findings the doctor appended to `path` (STALE_DOCTOR_FILE) while the apps ran."""
    lines = path.read_text().splitlines() if path.exists() else []
    return [json.loads(line) for line in lines if line.strip()]


def doctor_causes(findings: list[dict[str, Any]]) -> list[str]:
    return sorted({finding["cause"] for finding in findings})


@dataclass(frozen=True)
class Cause:
    name: str
    title: str  # what the user sees, one line
    kind: str = "cause"  # "cause" (broken vs fixed app) or "myth" (a claim settled per backend)
    broken_module: str | None = None  # defaults to broken/<name>.py for causes

    @property
    def app_modules(self) -> dict[str, str]:
        """app label -> importable module with `create_app`; myths run without an app."""
        if self.kind == "myth":
            return {"claim": "", "cure": ""}
        return {"broken": self.broken_module or f"broken.{self.name}", "fixed": "fixed.app"}


@dataclass
class Step:
    number: int
    actor: str
    action: str
    expected: str
    observed: str
    served_by: str = ""
    db_conn: str = ""
    transactions: list[str] = field(default_factory=list)


class Scenario:
    """Handed to `run`: everything a scenario may use, all of it cleaned up by the runner."""

    def __init__(self, cause: Cause, app: str, module: str, backend: str, db_url: str,
                 workdir: Path, echo: Callable[[str], None]) -> None:
        self.cause, self.app, self.module, self.backend, self.db_url = cause, app, module, backend, db_url
        self.workdir = workdir
        self.control_dir = workdir / "control"
        self.control_dir.mkdir(parents=True, exist_ok=True)
        self.txlog_path = workdir / "txlog.jsonl"
        self.txlog_path.touch()
        self.steps: list[Step] = []
        self._echo = echo
        self._txlog_offset = 0
        self._cleanup = ExitStack()
        self._servers: list[GunicornServer] = []
        self.screenshots: list[dict[str, str]] = []  # name, caption, url, file (in workdir/screens/)
        self._browser: Any = None

    # ---- running the app ---------------------------------------------------------------

    @property
    def doctor_path(self) -> Path:
        return self.workdir / "doctor.jsonl"

    @property
    def lab_env(self) -> dict[str, str]:
        env = {
            "LAB_DATABASE_URL": self.db_url,
            "LAB_TXLOG": str(self.txlog_path),
            "LAB_CONTROL_DIR": str(self.control_dir),
        }
        if doctor_requested():
            env.update(DOCTOR_ENV, STALE_DOCTOR_FILE=str(self.doctor_path))
        return env

    def serve(self, workers: int = 1, threads: int = 1, preload: bool = False,
              env: dict[str, str] | None = None) -> GunicornServer:
        """Start this scenario's app under gunicorn; stopped when the scenario ends."""
        server = GunicornServer(
            f"{self.module}:create_app()", {**self.lab_env, **(env or {})},
            self.workdir / f"gunicorn-{len(self._servers)}.log", workers=workers, threads=threads, preload=preload,
        )
        self._cleanup.callback(server.stop)
        self._servers.append(server)
        return server.start()

    def actor(self, name: str, server: GunicornServer) -> Actor:
        return Actor(name, server.port)

    def hold(self, server: GunicornServer, key: str) -> "Hold":
        """Occupy one worker thread until `release()`; returns once it is held, naming it."""
        hold = Hold(self, server, key)
        self._cleanup.callback(hold.release)
        hold.start()
        return hold

    def screenshot(self, server: GunicornServer, name: str, caption: str, path: str = "/transactions?limit=1") -> None:
        """When screenshots are requested (LAB_SCREENSHOTS=1, as `make report` runs the causes it
        shows), open `path` on `server` in headless Chromium (lab/harness/browser.py, one per
        scenario, stopped at its end) and keep a PNG of the page as the user sees it now. The
        browser's request is one more request to the app: a scenario takes it where it cannot
        change what the scenario observes (after the read it shows, with the same steering)."""
        if not screenshots_requested():
            return
        if self._browser is None:
            from lab.harness.browser import Browser

            self._browser = Browser().start()
            self._cleanup.callback(self._browser.stop)
        url = f"http://127.0.0.1:{server.port}{path}"
        self._browser.driver.set_window_size(*SCREENSHOT_SIZE)
        self._browser.driver.get(url)
        folder = self.workdir / "screens"
        folder.mkdir(exist_ok=True)
        (folder / f"{name}.png").write_bytes(self._browser.driver.get_screenshot_as_png())
        self.screenshots.append({"name": name, "caption": caption, "url": path, "file": f"{name}.png"})
        self.note(f"screenshot {name}: {path} in headless Chromium")

    def on_close(self, callback: Callable[[], Any]) -> None:
        """Run `callback` when the scenario ends, whatever happened (stop what a step started)."""
        self._cleanup.callback(callback)

    def engine(self, **options: Any) -> Engine:
        """A direct engine on the scenario's database (the auditor's view); disposed at the end."""
        engine = configure_engine(create_engine(self.db_url, **{**engine_options(self.db_url), **options}))
        self._cleanup.callback(engine.dispose)
        return engine

    # ---- the timeline -----------------------------------------------------------------

    def step(self, actor: str, action: str, expected: str, observed: str, reply: Any = None) -> Step:
        """Record and print one numbered step with the transaction events since the last one."""
        step = Step(len(self.steps) + 1, actor, action, expected, observed,
                    served_by=getattr(reply, "served_by", ""), db_conn=getattr(reply, "db_conn", ""),
                    transactions=self._new_transaction_events())
        self.steps.append(step)
        where = f"  [served by {step.served_by}, db conn {step.db_conn}]" if step.served_by else ""
        self._echo(f"  {step.number:>2}. {actor:<8} {action}{where}")
        self._echo(f"      expected: {expected}")
        self._echo(f"      observed: {observed}")
        if step.transactions:
            self._echo(f"      sql:      {' · '.join(step.transactions)}")
        return step

    def note(self, text: str) -> None:
        self._echo(f"      note:     {text}")

    def _new_transaction_events(self) -> list[str]:
        with self.txlog_path.open(encoding="utf-8") as log:
            log.seek(self._txlog_offset)
            lines = log.readlines()
            self._txlog_offset = log.tell()
        events = [json.loads(line) for line in lines if line.strip()]
        return [f"{e['actor']}:{e['event']}{' ' + e['isolation'] if e.get('isolation') else ''} conn={e['conn']} "
                f"({e['pid']}/{e['thread']})" for e in events]

    def close(self) -> None:
        self._cleanup.close()


class Hold:
    """A `/_lab/hold/<key>` request in flight: the thread that took it is busy until released."""

    def __init__(self, scenario: Scenario, server: GunicornServer, key: str) -> None:
        self.scenario, self.server, self.key = scenario, server, key
        self.served_by = ""
        self._thread: Any = None

    def start(self) -> None:
        import threading

        held_file = self.scenario.control_dir / f"held-{self.key}"
        self._thread = threading.Thread(
            target=lambda: Actor("holder", self.server.port, timeout=40).get(f"/_lab/hold/{self.key}"), daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + 10
        while not held_file.exists():
            if time.monotonic() > deadline:
                raise RuntimeError(f"hold {self.key!r} was not taken by any worker thread within 10 s")
            time.sleep(0.005)
        self.served_by = held_file.read_text().strip()

    def release(self) -> None:
        (self.scenario.control_dir / f"release-{self.key}").touch()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
