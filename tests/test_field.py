"""The doctor in the field, short form (`make doctor-field` runs the whole corpus): the first
app of the corpus, installed from the registry into its own venv, its clean flow and three
injected causes. No finding on the clean flow may be unjudged or a false alarm, and each
injection must be found with its own cause."""

from __future__ import annotations

import json
import subprocess
import sys

from field.__main__ import RESULTS, SHORT_INJECTIONS
from field.corpus import CORPUS, REPO_ROOT


def test_the_short_field_run_finds_each_injection_and_no_false_alarm() -> None:
    app = CORPUS[0]
    done = subprocess.run([sys.executable, "-m", "field", "--short", "--app", app.name], cwd=REPO_ROOT,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "0 false alarm(s) or unjudged finding(s); 0 injection(s) missed; 0 run(s) failed" in done.stdout
    for cause in SHORT_INJECTIONS:
        assert f"| {cause} | found" in done.stdout, done.stdout
        result = json.loads((RESULTS / app.name / f"inject-{cause}.json").read_text())
        assert any(f["cause"] == cause for step in result["steps"] for f in step["findings"])
    clean = json.loads((RESULTS / app.name / "clean.json").read_text())
    assert all(step["ok"] for step in clean["steps"]), [s["name"] for s in clean["steps"] if not s["ok"]]
