"""python -m loadtests.summary: what the latest stored load of each cause showed, as Markdown.

Reads results/<backend>/<cause>/load/latest/results.json (written by `make load`), so every
figure it prints comes from a run, and says which run (its folder) it came from.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lab.databases import BACKENDS
from loadtests.runner import RESULTS_DIR


def latest_runs(results_dir: Path = RESULTS_DIR) -> dict[tuple[str, str], tuple[Path, dict[str, Any]]]:
    """(cause, backend) -> (run folder, results.json) of the latest load."""
    found = {}
    for path in sorted(results_dir.glob("*/*/load/latest/results.json")):
        data = json.loads(path.read_text())
        found[(data["cause"], data["backend"])] = (path.parent.resolve(), data)
    return found


def finding(app: dict[str, Any] | None) -> str:
    """One cell: stale / lost / errors, and the informational counts when not zero."""
    if not app or not app.get("checker"):
        return "not run" if not app else f"failed: {app.get('failure')}"
    c = app["checker"]
    text = f"{c['stale_reads']} / {c['lost_writes']} / {c['errors']}"
    extras = [f"{c['blind_overwrites']} blind overwrites" if c.get("blind_overwrites") else "",
              f"{c['repeated_row_pages']} pages repeating a row" if c.get("repeated_row_pages") else ""]
    extras = [e for e in extras if e]
    return text + (f" ({', '.join(extras)})" if extras else "")


def markdown(runs: dict[tuple[str, str], tuple[Path, dict[str, Any]]]) -> str:
    backends = [b for b in BACKENDS if any(key[1] == b for key in runs)]
    versions = {b: next((d["apps"].get("fixed", {}).get("server_version") for (c, bb), (_, d) in runs.items()
                         if bb == b), b) for b in backends}
    lines = ["Stale reads / lost writes / errors (broken app; the fixed app beside it had "
             "the figures in the second table):", "",
             "| cause | " + " | ".join(versions[b] or b for b in backends) + " |", "|---|" + "---|" * len(backends)]
    for cause in sorted({c for c, _ in runs}):
        cells = [finding(runs[(cause, b)][1]["apps"].get("broken")) if (cause, b) in runs else "" for b in backends]
        lines.append(f"| {cause} | " + " | ".join(cells) + " |")
    lines += ["", "Fixed app in the same runs: stale / lost / errors, requests/s, list page / ping:", "",
              "| cause (run) | " + " | ".join(versions[b] or b for b in backends) + " |",
              "|---|" + "---|" * len(backends)]
    for cause in sorted({c for c, _ in runs}):
        cells = []
        for b in backends:
            if (cause, b) not in runs:
                cells.append("")
                continue
            fixed = runs[(cause, b)][1]["apps"].get("fixed") or {}
            ratio = fixed.get("ratio") or {}
            rps = (fixed.get("stats") or {}).get("requests_per_second")
            cells.append(f"{finding(fixed)}, {rps} req/s, " + (f"{ratio['list']['requests_per_second']:.0f} / "
                         f"{ratio['ping']['requests_per_second']:.0f} = {ratio['list_to_ping']}" if ratio else "-"))
        lines.append(f"| {cause} | " + " | ".join(cells) + " |")
    lines += ["", "Runs: " + ", ".join(sorted(str(p.relative_to(RESULTS_DIR.parent)) for p, _ in runs.values()))]
    return "\n".join(lines)


def main() -> int:
    runs = latest_runs()
    if not runs:
        print("no stored loads: run `make load CAUSE=<cause>` first", file=sys.stderr)
        return 1
    print(markdown(runs))
    return 0


if __name__ == "__main__":
    sys.exit(main())
