"""Imports run one way (DESIGN.md, Layers). From the ground up:

1. the app core, `lab/*.py` (models, queries, web, engine, seed, lab mode, and the features the
   fixed app carries: routing, replica, jobs, caching, prices...);
2. the harness, `lab/harness/`, which runs a scenario module it is given;
3. what stands on both: `scenarios/` and `loadtests/`; the doctor (`doctor/stale_doctor`)
   stands alone, as it is installed into other people's apps;
4. what reads their results: `reporting/` (the report, the notebook helpers, the Russian
   answer), `notebooks/`.

A module may import from its own room and the rooms below it, never above. Every import is
read from the source (module level and inside functions, `importlib.import_module("...")`
with a literal name too), so a lazy import cannot hide an upward one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lab.engine import REPO_ROOT

ROOMS = {  # room -> (its files, the top-level names it must not import)
    "app core": (["lab/*.py"], {"lab.harness", "reporting", "scenarios", "loadtests", "notebooks", "fixed", "broken",
                                "tests"}),
    "harness": (["lab/harness/*.py"], {"reporting", "scenarios", "loadtests", "notebooks", "fixed", "broken",
                                       "tests"}),
    "scenarios": (["scenarios/*.py"], {"reporting", "loadtests", "notebooks", "tests"}),
    "loads": (["loadtests/*.py"], {"reporting", "scenarios", "notebooks", "tests"}),
    "doctor": (["doctor/stale_doctor/*.py"], {"lab", "scenarios", "loadtests", "notebooks", "fixed", "broken", "tests"}),
    "field": (["field/*.py", "field/runtime/*.py", "field/apps/*/*.py"],
              {"lab", "scenarios", "loadtests", "reporting", "notebooks", "fixed", "broken", "tests", "bench"}),
}
# What a room may import from a room it must not otherwise: the field's host side (run in the lab's
# venv) makes each server run's private database with the lab's own helper; its runtime, in the
# apps' venvs, imports nothing of the lab.
ALLOWED = {"field": {"lab.databases"}}


def imported_names(path: Path) -> set[str]:
    """Every absolute module name the file imports, wherever the import statement is."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from lab import harness`
        elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
              and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            names.add(node.args[0].value)
    return names


def _forbidden(name: str, banned: set[str]) -> bool:
    return any(name == room or name.startswith(room + ".") for room in banned)


@pytest.mark.parametrize("room", ROOMS)
def test_no_room_imports_a_room_above_it(room: str) -> None:
    patterns, banned = ROOMS[room]
    files = sorted(path for pattern in patterns for path in REPO_ROOT.glob(pattern))
    assert files, patterns
    upward = {f"{path.relative_to(REPO_ROOT)}: {name}" for path in files
              for name in imported_names(path)
              if _forbidden(name, banned) and not _forbidden(name, ALLOWED.get(room, set()))}
    assert not upward, sorted(upward)


def test_the_check_sees_lazy_and_dynamic_imports(tmp_path: Path) -> None:
    module = tmp_path / "sample.py"
    module.write_text("import importlib\n\ndef later():\n    from scenarios.__main__ import check_backend\n"
                      "    return importlib.import_module('loadtests.runner')\n\nfrom lab import harness\nimport reporting.answer\n")
    names = imported_names(module)
    assert {"scenarios.__main__", "loadtests.runner", "lab.harness", "reporting.answer"} <= names
    assert _forbidden("reporting.report", {"reporting"}) and not _forbidden("reportingx", {"reporting"})
