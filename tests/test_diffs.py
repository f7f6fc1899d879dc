"""`make diff CAUSE=...` is the lesson: each broken app differs from fixed/app.py by its bug alone."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BROKEN = sorted(p.stem for p in (ROOT / "broken").glob("*.py") if p.stem != "__init__")
MAX_CHANGED_LINES = 60  # about a minute to read


def hunks(cause: str) -> list[list[str]]:
    diff = subprocess.run(["diff", "-u", "fixed/app.py", f"broken/{cause}.py"], cwd=ROOT,
                          capture_output=True, text=True).stdout
    result: list[list[str]] = []
    for line in diff.splitlines()[2:]:
        if line.startswith("@@"):
            result.append([])
        elif result:
            result[-1].append(line)
    return result


def test_there_are_broken_apps() -> None:
    assert "uncommitted" in BROKEN


@pytest.mark.parametrize("cause", BROKEN)
def test_every_hunk_marks_its_bug(cause: str) -> None:
    found = hunks(cause)
    assert found, f"broken/{cause}.py is identical to fixed/app.py"
    for hunk in found:
        changed = [line for line in hunk if line[:1] in "+-"]
        assert any("# BUG:" in line for line in hunk if line[:1] in "+ "), (
            f"a hunk of broken/{cause}.py has no '# BUG:' line:\n" + "\n".join(changed))


@pytest.mark.parametrize("cause", BROKEN)
def test_diff_stays_short(cause: str) -> None:
    changed = sum(1 for hunk in hunks(cause) for line in hunk if line[:1] in "+-")
    assert changed <= MAX_CHANGED_LINES, f"broken/{cause}.py changes {changed} lines"


@pytest.mark.parametrize("cause", BROKEN)
def test_docstring_says_symptom_why_and_cure(cause: str) -> None:
    import ast

    doc = ast.get_docstring(ast.parse((ROOT / "broken" / f"{cause}.py").read_text())) or ""
    assert doc.startswith(f"# BUG: {cause}"), doc[:80]
    for part in ("What the user sees", "Why", "Cure"):
        assert part in doc, f"broken/{cause}.py docstring lacks '{part}'"
