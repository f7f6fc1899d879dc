"""Run an existing test suite with the doctor: `pytest -p stale_doctor.pytest_plugin --stale-doctor`.

Installed with the package, the plugin is registered (entry point) but does nothing until
`--stale-doctor` is given. Then every Flask app the tests build is watched, whether or not it
installed StaleDoctor itself (its STALE_DOCTOR_* config still applies), and:
- `--stale-doctor` (or `=fail`): a test during which the doctor made a finding fails, with the
  findings as its report;
- `--stale-doctor=report`: tests pass or fail as they would; the findings are listed at the end.
`--stale-doctor-file PATH` also writes them as JSONL, for `flask stale-doctor report --file`.
"""

from __future__ import annotations

from typing import Any, Iterator

import pytest

from .config import Settings
from .findings import Finding
from .monitor import MONITOR
from .report import render

_KEY = "stale_doctor_collector"


class Collector:
    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.current: list[Finding] = []
        self.all: list[tuple[str, Finding]] = []
        self.nodeid = ""

    def __call__(self, finding: Finding) -> None:
        self.current.append(finding)
        self.all.append((self.nodeid, finding))


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("stale-doctor", "the stale-data doctor")
    group.addoption("--stale-doctor", nargs="?", const="fail", default=None, choices=("fail", "report"),
                    help="watch every Flask app the tests use; fail the tests that show a cause of stale data "
                         "(fail, the default) or only list what was found (report)")
    group.addoption("--stale-doctor-file", default=None, help="also write the findings to this JSONL file")


def pytest_configure(config: pytest.Config) -> None:
    mode = config.getoption("--stale-doctor", None)
    if not mode:
        return
    collector = Collector(mode)
    config.stash[_stash_key()] = collector
    MONITOR.auto = True
    MONITOR.auto_settings = Settings(mode="collect", file=config.getoption("--stale-doctor-file"))
    MONITOR.acquire()
    MONITOR.sink.listeners.append(collector)


def pytest_unconfigure(config: pytest.Config) -> None:
    collector = config.stash.get(_stash_key(), None)
    if collector is None:
        return
    MONITOR.sink.listeners.remove(collector)
    MONITOR.auto, MONITOR.auto_settings = False, None
    MONITOR.release()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> Iterator[None]:
    collector = item.config.stash.get(_stash_key(), None)
    if collector is not None:
        collector.nodeid, collector.current = item.nodeid, []
    yield


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[Any]) -> Iterator[None]:
    outcome = yield
    collector = item.config.stash.get(_stash_key(), None)
    if collector is None or call.when not in ("call", "teardown") or not collector.current:
        return
    report = outcome.get_result()
    found, collector.current = collector.current, []
    text = "\n".join(f"{f.cause}: {f.proof}" + (f"\n    at {f.evidence['location']}" if f.evidence.get("location") else "")
                     for f in found)
    report.sections.append(("stale-doctor", text))
    if collector.mode == "fail" and report.passed:
        report.outcome = "failed"
        report.longrepr = f"stale-doctor found {len(found)} cause(s) of stale data in this test:\n{text}"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    collector = config.stash.get(_stash_key(), None)
    if collector is None:
        return
    terminalreporter.section("stale-doctor")
    records = []
    for nodeid, finding in collector.all:
        data = finding.as_json()
        data["evidence"] = {**data["evidence"], "test": nodeid}
        records.append(data)
    terminalreporter.write(render(records, "this test run"))
    tests = sorted({nodeid for nodeid, _ in collector.all})
    if tests:
        terminalreporter.write_line(f"tests with findings: {', '.join(tests)}")


_STASH_KEY: Any = None


def _stash_key() -> Any:
    global _STASH_KEY
    if _STASH_KEY is None:
        _STASH_KEY = pytest.StashKey[Collector]()
    return _STASH_KEY
