"""python -m reporting.report: the client-facing report, built only from stored results of real runs.

Reads the latest scenario results (results/<backend>/<cause>/<app>/latest/result.json) and
load results (results/<backend>/<cause>/load/latest*/), and writes reports/report.html (one
self-contained page: CSS inline, plots as base64 PNG) and reports/report.md (the same content,
plots in reports/report-images/). Every verdict, proof, version and figure comes from those
files; the explanations come from the broken variants' and scenarios' docstrings and the fix
from fixed/app.py. A backend, cell or load that has no result is said so in the report. It also
writes reports/answer.md, the consultant's answer to the client point by point (reporting/
answer.py: the claims of the claims_check notebook settled by the same results), which the
HTML report carries as a section.

With --run-missing (what `make report` does) it first runs what is missing: the scenario cells
with no result on each backend (`python -m scenarios`) and, on a backend with no load result
at all, one short load (`python -m loadtests`), and claims 10 and 11's measurements when none
is stored (results/claims/latest/). It always runs SCREENSHOT_CAUSES on SQLite with screenshots
(LAB_SCREENSHOTS=1): the page in headless Chromium at the moment each cause shows, broken
beside fixed, embedded in the cause's section.
"""

from __future__ import annotations

import argparse
import ast
import datetime as dt
import difflib
import json
import re
import os
import subprocess
import sys
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from lab import databases
from lab.engine import REPO_ROOT
from lab.harness import runner, verdicts
from lab.harness.scenario import SCREENSHOTS_VARIABLE
from reporting import answer, claims
from reporting.reportdoc import Bullets, Cell, Code, Document, Figure, Para, Section, Table, to_markdown, write
from scenarios import scenario_modules

BACKEND_NAMES = {"sqlite": "SQLite", "postgresql": "PostgreSQL", "mariadb": "MariaDB"}
SCREENSHOT_CAUSES = ("global_cache", "long_transaction", "http_cache")  # the page shown, broken beside fixed
BUG_VERDICTS = {verdicts.STALE, verdicts.LOST, verdicts.CRASH, verdicts.SHARED_CONNECTION}
LOAD_LINKS = {"latest": False, "latest-distributed": True}  # link name -> distributed
STALENESS = {verdicts.IN_ORM: "the ORM (a held object)", verdicts.IN_DATABASE: "the database (an old snapshot)",
             verdicts.NOWHERE: ""}
DEFAULT_LOAD = {"cause": "uncommitted", "duration": 10, "users": 20}  # a cause every load shows


# ---- what is on disk ---------------------------------------------------------------------

@dataclass
class LoadRun:
    cause: str
    backend: str
    distributed: bool
    run_dir: Path
    data: dict[str, Any]

    @property
    def label(self) -> str:
        return self.cause + (" (distributed)" if self.distributed else "")

    @property
    def name(self) -> str:
        return f"{self.backend}-{self.cause}" + ("-distributed" if self.distributed else "")


@dataclass
class Results:
    """The latest result of every cell and load found, and what the run of make report said."""

    modules: dict[str, ModuleType]
    expected: dict[str, dict[str, dict[str, Any]]]
    cells: dict[tuple[str, str, str], dict[str, Any]]  # (cause, app, backend) -> result.json
    loads: list[LoadRun]
    results_dir: Path
    notes: list[str] = field(default_factory=list)  # plain statements from --run-missing

    def kind(self, cause: str) -> str:
        return self.modules[cause].CAUSE.kind

    def names(self, kind: str) -> list[str]:
        return [name for name, module in self.modules.items() if module.CAUSE.kind == kind]

    def apps(self, cause: str) -> list[str]:
        return list(self.modules[cause].CAUSE.app_modules)

    def want(self, cause: str, app: str, backend: str) -> dict[str, Any]:
        return self.expected.get(cause, {}).get(app, {}).get(backend, {})

    def backends_with_results(self) -> list[str]:
        return [b for b in databases.BACKENDS if any(key[2] == b for key in self.cells)]

    def server_name(self, backend: str) -> str:
        """"PostgreSQL 15.20" from the results; several versions are all named."""
        found = Counter(c["server_version"] for (_, _, b), c in self.cells.items() if b == backend and c.get("server_version"))
        found.update(r.data["apps"][app].get("server_version") for r in self.loads if r.backend == backend
                     for app in r.data.get("apps", {}) if r.data["apps"][app].get("server_version"))
        return " / ".join(v for v, _ in found.most_common()) or BACKEND_NAMES[backend]


def collect(results_dir: Path, notes: list[str] | None = None) -> Results:
    modules = scenario_modules()
    cells: dict[tuple[str, str, str], dict[str, Any]] = {}
    for cause, module in modules.items():
        for app in module.CAUSE.app_modules:
            for backend in databases.BACKENDS:
                path = results_dir / backend / cause / app / "latest" / "result.json"
                if path.exists():
                    cells[(cause, app, backend)] = json.loads(path.read_text())
    loads = []
    for backend in databases.BACKENDS:
        for cause, module in modules.items():
            for link, distributed in LOAD_LINKS.items():
                path = results_dir / backend / cause / "load" / link / "results.json"
                if module.CAUSE.kind == "cause" and path.exists():
                    loads.append(LoadRun(cause, backend, distributed, path.parent.resolve(), json.loads(path.read_text())))
    return Results(modules, runner.load_expected(), cells, loads, results_dir, list(notes or []))


# ---- texts from the code (never retyped) ---------------------------------------------------

def explanation(cause: str) -> dict[str, str]:
    """headline, sees, why, cure from the docstring of broken/<cause>.py (empty if absent)."""
    path = REPO_ROOT / "broken" / f"{cause}.py"
    if not path.exists():
        return {}
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    first, _, rest = doc.partition("\n")
    parts = re.split(r"^(What the user sees|Why|Cure):\s*", rest, flags=re.M)
    named = {parts[i]: " ".join(parts[i + 1].split()) for i in range(1, len(parts) - 1, 2)}
    return {"headline": first.split("--", 1)[-1].strip(), "sees": named.get("What the user sees", ""),
            "why": named.get("Why", ""), "cure": named.get("Cure", "")}


def prose(text: str) -> list[Para | Bullets]:
    """A docstring as paragraphs; lines starting with "- " become a list."""
    blocks: list[Para | Bullets] = []
    for chunk in re.split(r"\n\s*\n", text.strip()):
        lead: list[str] = []
        items: list[str] = []
        for line in chunk.splitlines():
            line = line.strip()
            if line.startswith("- "):
                items.append(line[2:])
            elif items:
                items[-1] += " " + line
            else:
                lead.append(line)
        if lead:
            blocks.append(Para(" ".join(lead)))
        if items:
            blocks.append(Bullets(items))
    return blocks


def fix_rules() -> tuple[str, list[str]]:
    """The heading and numbered rules of the "Session rules" comment in fixed/app.py."""
    heading, rules = "", []
    for line in (REPO_ROOT / "fixed" / "app.py").read_text().splitlines():
        if line.startswith("# Session rules"):
            heading = line[2:].strip()
        elif heading and re.match(r"# \d+\. ", line):
            rules.append(line[2:].split(". ", 1)[1].strip())
        elif heading and rules and line.startswith("#    "):
            rules[-1] += " " + line[2:].strip()
        elif heading and (not line.startswith("#") or rules and not line.startswith("#  ")):
            break
    return heading, rules


def fix_diff(cause: str) -> str:
    """`diff -u fixed/app.py broken/<cause>.py`: the bug, line by line."""
    fixed = (REPO_ROOT / "fixed" / "app.py").read_text().splitlines(keepends=True)
    broken = (REPO_ROOT / "broken" / f"{cause}.py").read_text().splitlines(keepends=True)
    return "".join(difflib.unified_diff(fixed, broken, "fixed/app.py", f"broken/{cause}.py"))


def verdict_legend() -> list[str]:
    """Each verdict with its meaning, from the comments of lab/harness/verdicts.py."""
    source = (REPO_ROOT / "lab" / "harness" / "verdicts.py").read_text()
    return [f"`{value}`: {meaning}" for value, meaning in re.findall(r'^[A-Z_]+ = "([A-Z/ _]+)"\s+# (.+)$', source, re.M)]


def myth_claim(module: ModuleType) -> str:
    """The claim as the myth's docstring quotes it ("myth_x: \"the claim\"."), without the quotes."""
    first = (module.__doc__ or "").strip().partition("\n")[0]
    claim = first.split(":", 1)[1] if first.startswith(module.CAUSE.name + ":") else module.CAUSE.title
    return claim.strip().rstrip(".").strip('"')


def sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


# ---- formatting helpers ------------------------------------------------------------------

def when(iso: str | None) -> str:
    if not iso:
        return "?"
    return dt.datetime.fromisoformat(iso).astimezone(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def verdict_cell(results: Results, cause: str, app: str, backend: str) -> Cell:
    want = results.want(cause, app, backend).get("verdict")
    result = results.cells.get((cause, app, backend))
    if want == verdicts.NOT_APPLICABLE:
        return Cell("N/A", "na")
    if result is None:
        return Cell("not run", "missing")
    verdict = result["verdict"]
    css = ("bug" if verdict in BUG_VERDICTS else "fresh" if verdict == verdicts.FRESH
           else "myth" if verdict in verdicts.MYTH_VERDICTS else "inconclusive")
    if want is not None and verdict != want:
        return Cell(f"{verdict} (expected {want})", "unexpected")
    return Cell(verdict, css)


def join_names(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def by_verdict(results: Results, cause: str, app: str) -> str:
    """"STALE on SQLite and MariaDB, CRASH on PostgreSQL" for the backends that have a result."""
    groups: dict[str, list[str]] = defaultdict(list)
    for backend in databases.BACKENDS:
        result = results.cells.get((cause, app, backend))
        if result is not None:
            groups[result["verdict"]].append(BACKEND_NAMES[backend])
    return "; ".join(f"{verdict} on {join_names(names)}" for verdict, names in groups.items()) or "no result"


def claim_verdicts(results: Results, myth: str) -> str:
    """"does not hold on SQLite and MariaDB; holds on PostgreSQL" for a myth's claim."""
    return re.sub(r"(HOLDS|DOES NOT HOLD) on", lambda m: m.group(1).lower() + " on", by_verdict(results, myth, "claim"))


def shown_path(path: Path) -> str:
    """A path relative to the repository when it is inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path)


def percent(share: float | None) -> str:
    return "-" if share is None else f"{share * 100:.1f} %"


# ---- sections ----------------------------------------------------------------------------

def summary_section(results: Results) -> Section:
    section = Section("summary", "Summary")
    causes, myths = results.names("cause"), results.names("myth")
    run_cells = list(results.cells.items())
    matching = sum(1 for (cause, app, b), c in run_cells if c["verdict"] == results.want(cause, app, b).get("verdict"))
    expected_total = sum(1 for cause in results.modules for app in results.apps(cause) for b in databases.BACKENDS
                         if results.want(cause, app, b).get("verdict") not in (None, verdicts.NOT_APPLICABLE))
    shown = [c for c in causes if any(results.cells.get((c, "broken", b), {}).get("verdict") in BUG_VERDICTS
                                      for b in databases.BACKENDS)]
    fixed = [c for (cause, app, b), c in run_cells if app == "fixed"]
    fixed_fresh = sum(1 for c in fixed if c["verdict"] == verdicts.FRESH)
    servers = [results.server_name(b) for b in results.backends_with_results()]

    section.add(Para(
        "**The symptom.** A Flask + SQLAlchemy web app \"does not reflect the latest database changes\": a user "
        "saves an edit and is told it succeeded, yet a page shows the old data, or the edit is gone.", "lead"))
    if not run_cells:
        section.add(Para("**No scenario result was found**, so this report can show no verdict. "
                         "Run `make report` (or `make reproduce DB=all`) to produce them.", "note"))
    else:
        section.add(Para(
            f"**What the lab found.** Each known cause was built into a copy of the app that differs from the fixed "
            f"app by that one bug, and run as a scripted scenario on {join_names(servers) if servers else 'no server'}. "
            f"{len(shown)} of {len(causes)} causes made the broken app go wrong (stale pages, lost edits, errors or a "
            f"shared connection); the fixed app was FRESH in {fixed_fresh} of its {len(fixed)} runs. "
            f"{matching} of the {expected_total} expected cells have a result that matches the expected verdict "
            f"(`scenarios/expected_matrix.json`)."))
        section.add(Bullets([f"**{sentence(results.modules[c].CAUSE.title)}** (`{c}`): {by_verdict(results, c, 'broken')}"
                             for c in causes]))
        myth_lines = [f"\"{myth_claim(results.modules[m])}\" (`{m}`): {claim_verdicts(results, m)}"
                      for m in myths if any((m, 'claim', b) in results.cells for b in databases.BACKENDS)]
        if myth_lines:
            section.add(Para("Beliefs often offered as the fix, each claim checked on every backend:"),
                        Bullets(myth_lines))
    section.add(load_headline(results))
    heading, rules = fix_rules()
    if rules:
        section.add(Para(
            "**The fix.** The fixed app (`fixed/app.py`), which every broken variant differs from by its one bug, "
            "follows these rules: "
            + "; ".join(f"({i}) {rule.rstrip('.')}" for i, rule in enumerate(rules, 1))
            + ". Each cause's own cure and the exact lines that differ are in its section below."))
    gaps = missing_items(results)
    if gaps:
        section.add(Para(f"**Missing from this report:** {len(gaps)} item(s), listed under "
                         "\"Missing pieces\" below; nothing is filled in for them.", "note"))
    return section


def load_headline(results: Results) -> Para:
    if not results.loads:
        return Para("**Under load:** no load result was found; see \"Missing pieces\".", "note")
    totals: dict[str, Counter] = defaultdict(Counter)
    worst: tuple[float, str] = (-1.0, "")
    for load in results.loads:
        for app, run in load.data.get("apps", {}).items():
            check = run.get("checker") or {}
            totals[app].update({k: check.get(k, 0) or 0 for k in ("stale_reads", "lost_writes", "errors", "reads")})
            totals[app]["runs"] += 1
            if app == "broken" and check.get("stale_share", 0) > worst[0]:
                worst = (check["stale_share"], f"{load.label} on {run.get('server_version') or load.backend}: "
                                               f"{percent(check['stale_share'])} of reads stale, the oldest "
                                               f"{check.get('oldest_staleness_seconds', 0):.1f} s behind an acknowledged edit")
    b, f = totals["broken"], totals["fixed"]
    return Para(
        f"**Under load** ({len(results.loads)} load run(s), each broken variant and the fixed app under the same locust "
        f"readers and writers): the broken variants served {b['stale_reads']:,} stale reads of {b['reads']:,}, lost "
        f"{b['lost_writes']:,} acknowledged writes and had {b['errors']:,} errors"
        + (f" (the worst: {worst[1]})" if worst[1] and worst[0] > 0 else "")
        + f"; the fixed app, in {f['runs']} run(s): {f['stale_reads']:,} stale reads of {f['reads']:,}, "
          f"{f['lost_writes']:,} lost writes, {f['errors']:,} errors.")


def matrix_section(results: Results) -> Section:
    section = Section("matrix", "Verdict matrix")
    backends = list(databases.BACKENDS)
    versions = [results.server_name(b) if b in results.backends_with_results() else f"{BACKEND_NAMES[b]}: no results"
                for b in backends]
    section.add(Para("Server versions, as the runs recorded them: " + ", ".join(versions) + "."))
    for kind, anchor, title, apps in (("cause", "matrix-causes", "Causes: the broken variant and the fixed app", ("broken", "fixed")),
                                      ("myth", "myths-table", "Myths: the claim, and the cure", ("claim", "cure"))):
        names = results.names(kind)
        header = [kind] + [f"{app} · {results.server_name(b) if b in results.backends_with_results() else BACKEND_NAMES[b]}"
                           for app in apps for b in backends]
        rows = [[f"`{name}`"] + [verdict_cell(results, name, app, b) for app in apps for b in backends] for name in names]
        section.add(Section(anchor, title, [Table(header, rows, css="matrix")]))
    section.add(Para("How to read a verdict:"), Bullets(verdict_legend()))
    section.add(Para("A cell that differs from `scenarios/expected_matrix.json` says so in the cell (\"expected ...\"); "
                     "\"not run\" means no result exists for it (see \"Missing pieces\")."))
    reasons = [f"`{cause}` {app} on {BACKEND_NAMES[b]}: {results.want(cause, app, b).get('reason', '')}"
               for cause in results.modules for app in results.apps(cause) for b in backends
               if results.want(cause, app, b).get("verdict") == verdicts.NOT_APPLICABLE]
    if reasons:
        section.add(Para("N/A cells and why the cause cannot exist there:"), Bullets(reasons))
    return section


def missing_items(results: Results) -> list[str]:
    items: list[str] = []
    with_results = results.backends_with_results()
    for backend in databases.BACKENDS:
        if backend not in with_results:
            items.append(f"{BACKEND_NAMES[backend]}: no scenario was ever run on it (no result in "
                         f"`{results.results_dir.name}/{backend}/`); its columns say \"not run\".")
            continue
        absent = [f"`{cause}` {app}" for cause in results.modules for app in results.apps(cause)
                  if (cause, app, backend) not in results.cells
                  and results.want(cause, app, backend).get("verdict") != verdicts.NOT_APPLICABLE]
        if absent:
            items.append(f"{BACKEND_NAMES[backend]}: no result for {len(absent)} cell(s): {', '.join(absent)}.")
    for (cause, app, backend), cell in results.cells.items():
        want = results.want(cause, app, backend).get("verdict")
        if cell["verdict"] == verdicts.INCONCLUSIVE:
            items.append(f"`{cause}` {app} on {BACKEND_NAMES[backend]} was INCONCLUSIVE: {cell['proof']}")
        elif want is not None and cell["verdict"] != want:
            items.append(f"`{cause}` {app} on {BACKEND_NAMES[backend]}: {cell['verdict']} where {want} was expected "
                         f"({cell['proof']}).")
    load_backends = {load.backend for load in results.loads}
    for backend in databases.BACKENDS:
        if backend not in load_backends:
            items.append(f"{BACKEND_NAMES[backend]}: no load result (run `make load CAUSE=uncommitted DB={backend}`).")
        else:
            loaded = {load.cause for load in results.loads if load.backend == backend}
            absent = [c for c in results.names("cause") if c not in loaded]
            if absent:
                items.append(f"{BACKEND_NAMES[backend]}: no load result for {', '.join(f'`{c}`' for c in absent)}.")
    for load in results.loads:
        for app, run in load.data.get("apps", {}).items():
            if run.get("failure"):
                items.append(f"load `{load.label}` on {BACKEND_NAMES[load.backend]}, {app}: the run failed: {run['failure']}")
    return items


def missing_section(results: Results) -> Section:
    section = Section("missing", "Missing pieces")
    items = missing_items(results)
    section.add(*(Para(note, "note") for note in results.notes))
    if items:
        section.add(Para("What this report could not show, stated plainly (nothing is estimated in its place):"),
                    Bullets(items))
    else:
        section.add(Para("Nothing is missing: every expected cell has a result on every backend, every result "
                         "matches its expected verdict, and every cause has a load result on every backend."))
    return section


def timeline_table(result: dict[str, Any]) -> Table:
    rows = [[str(s["number"]), s["actor"], s["action"], s["expected"], s["observed"]] for s in result.get("timeline", [])]
    return Table(["#", "actor", "action", "expected", "observed"], rows, css="timeline")


def pick_run(results: Results, cause: str, app: str, prefer: set[str]) -> dict[str, Any] | None:
    """The run to show as the timeline: the first backend whose verdict is in `prefer`, else any."""
    runs = [results.cells[(cause, app, b)] for b in databases.BACKENDS if (cause, app, b) in results.cells]
    return next((r for r in runs if r["verdict"] in prefer), runs[0] if runs else None)


def proofs_table(results: Results, cause: str) -> Table:
    rows = []
    for backend in databases.BACKENDS:
        for app in results.apps(cause):
            result = results.cells.get((cause, app, backend))
            if result is None:
                reason = results.want(cause, app, backend).get("reason")
                rows.append([BACKEND_NAMES[backend], app, verdict_cell(results, cause, app, backend),
                             reason or "no result", "", ""])
                continue
            staleness = result.get("staleness", "none")
            rows.append([result.get("server_version") or BACKEND_NAMES[backend], app,
                         verdict_cell(results, cause, app, backend), result["proof"],
                         STALENESS.get(staleness, staleness), when(result.get("started_at"))])
    return Table(["server", "app", "verdict", "proof", "stale data sits in", "run"], rows,
                 caption="Verdicts and their proofs", css="proofs")


def cause_section(results: Results, cause: str) -> Section:
    module = results.modules[cause]
    text = explanation(cause)
    section = Section(f"cause-{cause}", f"{sentence(module.CAUSE.title)} (`{cause}`)")
    if text.get("headline"):
        section.add(Para(f"**The bug:** {text['headline']}", "lead"))
    section.add(Para(f"**Verdicts.** Broken: {by_verdict(results, cause, 'broken')}. "
                     f"Fixed: {by_verdict(results, cause, 'fixed')}."))
    if text.get("sees"):
        section.add(Para(f"**What the user sees.** {sentence(text['sees'])}"))
    run = pick_run(results, cause, "broken", BUG_VERDICTS)
    if run is None:
        section.add(Para("No run of the broken app was found, so there is no timeline to show.", "note"))
    else:
        section.add(Para(f"**Timeline** of the broken app on {run.get('server_version') or run['backend']} "
                         f"(run {when(run.get('started_at'))}, {run.get('duration_seconds', 0):.1f} s): "
                         f"{run['verdict']}: {run['proof']}"), timeline_table(run))
    shots = screenshots_figure(results, cause)
    if shots is not None:
        section.add(shots)
    if text.get("why"):
        section.add(Para(f"**Why.** {sentence(text['why'])}"))
    if text.get("cure"):
        section.add(Para(f"**Cure.** {sentence(text['cure'])}"))
    if (REPO_ROOT / "broken" / f"{cause}.py").exists():
        section.add(Code(fix_diff(cause), f"The bug as a diff: `diff -u fixed/app.py broken/{cause}.py`", "diff"))
    section.add(proofs_table(results, cause))
    return section


def screenshots_figure(results: Results, cause: str) -> Figure | None:
    """The page in headless Chromium, broken beside fixed, at the moment the cause shows: the
    screenshots the latest runs on one backend took (`make report` takes them, SCREENSHOT_CAUSES)."""
    from reporting.reportplots import side_by_side

    for backend in databases.BACKENDS:
        runs = {app: results.cells.get((cause, app, backend)) for app in ("broken", "fixed")}
        shots = {app: (run or {}).get("screenshots") or [] for app, run in runs.items()}
        if not (shots["broken"] and shots["fixed"]):
            continue
        folder = {app: results.results_dir / backend / cause / app / "latest" for app in runs}
        first = {app: shots[app][0] for app in runs}
        paths = {app: folder[app] / first[app]["file"] for app in runs}
        if not all(path.exists() for path in paths.values()):
            continue
        broken, fixed = runs["broken"], runs["fixed"]
        caption = (f"{first['broken']['caption']}, `{first['broken']['url']}` in headless Chromium on "
                   f"{broken.get('server_version') or backend}: left the broken app ({broken['verdict']}, run "
                   f"{when(broken.get('started_at'))}), right the fixed app ({fixed['verdict']}, run "
                   f"{when(fixed.get('started_at'))}).")
        return Figure(f"screens-{backend}-{cause}", side_by_side(paths["broken"].read_bytes(), paths["fixed"].read_bytes()),
                      caption)
    return None


def myth_section(results: Results, myth: str) -> Section:
    module = results.modules[myth]
    section = Section(f"myth-{myth}", f"\"{myth_claim(module)}\" (`{myth}`)")
    section.add(Para(f"**Verdicts.** The claim: {by_verdict(results, myth, 'claim')}. "
                     f"The cure: {by_verdict(results, myth, 'cure')}.", "lead"))
    doc = (module.__doc__ or "").strip().partition("\n")[2]
    section.add(*prose(doc))
    run = pick_run(results, myth, "claim", {verdicts.DOES_NOT_HOLD})
    if run is not None:
        section.add(Para(f"**Timeline** of the claim on {run.get('server_version') or run['backend']} "
                         f"(run {when(run.get('started_at'))}): {run['verdict']}: {run['proof']}"), timeline_table(run))
    section.add(proofs_table(results, myth))
    return section


def load_shape(options: dict[str, Any]) -> str:
    """"50 users (9 readers : 1 writer) for 20 s, 2,000 rows" from a load's options."""
    return (f"{options.get('users', '?')} users ({options.get('reader_weight', '?')} readers : "
            f"{options.get('writer_weight', '?')} writers) for {options.get('duration', '?')} s, "
            f"{options.get('size', 0):,} rows" + (", locust master + 2 workers" if options.get("distributed") else ""))


def served_by(profile: dict[str, Any]) -> str:
    """"2 x 4 threads" or "2 sync, preload": the gunicorn shape, short."""
    kind = f"{profile.get('threads')} threads" if profile.get("threads", 1) > 1 else "sync"
    return f"{profile.get('workers', '?')} x {kind}" + (", preload" if profile.get("preload") else "")


def load_rows(loads: list[LoadRun], with_shape: bool) -> list[list[str | Cell]]:
    rows: list[list[str | Cell]] = []
    for load in loads:
        for app, run in load.data.get("apps", {}).items():
            stats, check = run.get("stats") or {}, run.get("checker") or {}
            where = served_by(run.get("profile", {})) + (f"; {load_shape(load.data.get('options', {}))}" if with_shape else "")
            if not check:
                rows.append([f"`{load.label}`", app, where,
                             Cell(f"no figures: {run.get('failure') or 'the run did not complete'}", "missing")] + [""] * 7)
                continue

            def judged(count: int, text: str) -> Cell:  # red when the broken app shows it, orange when the fixed one does
                return Cell(text, "" if not count else "bad" if app == "broken" else "unexpected")

            errors = f"{check['errors']:,}" + (" (" + ", ".join(f"{k} {v}" for k, v in check.get("errors_by_kind", {}).items())
                                                + ")" if check.get("errors") else "")
            rows.append([
                f"`{load.label}`", app, where, f"{stats.get('requests_per_second', 0):.1f}",
                f"{stats.get('p50_ms', 0):.0f} / {stats.get('p95_ms', 0):.0f} / {stats.get('p99_ms', 0):.0f}",
                judged(check["stale_reads"], f"{check['stale_reads']:,} of {check['reads']:,}"),
                judged(check["stale_reads"], percent(check.get("stale_share"))),
                judged(check["stale_reads"], f"{check.get('oldest_staleness_seconds', 0):.2f}"),
                judged(check["lost_writes"], f"{check['lost_writes']:,}"),
                judged(check["errors"], errors),
                ", ".join(f"{'.'.join(name.split('.')[-2:])} x{count}"  # "exc.OperationalError": whose error it is
                          for name, count in list(run.get("server_exceptions", {}).items())[:3]),
            ])
    return rows


def load_section(results: Results) -> Section:
    section = Section("load", "Under load: broken against fixed")
    if not results.loads:
        return section.add(Para("No load result was found in the results folder, so there is no load table. "
                                "`make load CAUSE=uncommitted` produces one (or `make report`, which runs a short one "
                                "when none exists).", "note"))
    section.add(Para(
        "Each load runs the broken variant and then the fixed app, each on its own identically seeded database, "
        "under gunicorn shaped as production would run that cause (\"served by\": workers x threads), with locust "
        "readers and writers (writers send the version they saw). An offline checker judges the merged request log: "
        "a read is stale when it shows a row older than an edit acknowledged before the read was sent (\"oldest\": "
        "how long after that acknowledgement); a write is lost when the database, audited right after the run, does "
        "not hold the highest acknowledged edit; errors are 5xx, failed connections and unexpected 4xx. A cause whose "
        "bug lives outside the web requests (a CLI job) or needs a precise interleaving may show nothing under load: "
        "its scenario above is the proof."))
    header = ["load", "app", "served by", "req/s", "p50 / p95 / p99 ms", "stale reads", "stale share",
              "oldest stale (s)", "lost writes", "errors", "server log"]
    for backend in databases.BACKENDS:
        loads = [load for load in results.loads if load.backend == backend]
        anchor = f"load-{backend}"
        if not loads:
            section.add(Section(anchor, BACKEND_NAMES[backend], [Para(f"No load result on {BACKEND_NAMES[backend]}.", "note")]))
            continue
        started = sorted(load.data.get("started_at", "") for load in loads)
        shapes = {load_shape(load.data.get("options", {})) for load in loads}
        caption = (f"{results.server_name(backend)}: {len(loads)} load run(s), {when(started[0])} to {when(started[-1])}"
                   + (f"; each {shapes.pop()}" if len(shapes) == 1 else ""))
        table = Table(header, load_rows(loads, with_shape=len(shapes) > 1), caption, css="numbers")
        section.add(Section(anchor, results.server_name(backend), [table]))
    return section


def plots_section(results: Results) -> Section:
    from reporting.reportplots import app_series, plot_load  # matplotlib only when there is a load to plot

    section = Section("plots", "Plots: stale reads and latency over time")
    if not results.loads:
        return section.add(Para("No load result, so nothing to plot.", "note"))
    section.add(Para("From the raw per-request logs of each load's main phase: on the left, reads the checker found "
                     "stale, per second; on the right, the median (solid) and 95th percentile (dashed) latency of the "
                     "requests sent in each second. Red: the broken variant; blue: the fixed app."))
    for backend in databases.BACKENDS:
        loads = [load for load in results.loads if load.backend == backend]
        if not loads:
            continue
        subsection = Section(f"plots-{backend}", results.server_name(backend))
        for load in loads:
            series, notes = [], []
            for app, run in load.data.get("apps", {}).items():
                one = app_series(app, load.run_dir / "raw" / app)
                if one is None:
                    notes.append(f"{app}: no raw request log in `{load.run_dir.name}/raw/{app}/`, not plotted")
                    continue
                stored = (run.get("checker") or {}).get("stale_reads")
                if stored is not None and stored != one.stale:
                    notes.append(f"{app}: the checker now finds {one.stale} stale reads in the raw log, "
                                 f"results.json says {stored}")
                series.append(one)
            options = load.data.get("options", {})
            title = f"{load.label} on {results.server_name(backend)}"
            caption = (f"`{load.label}` on {results.server_name(backend)}, {options.get('users', '?')} users for "
                       f"{options.get('duration', '?')} s (run {when(load.data.get('started_at'))})")
            if series:
                subsection.add(Figure(load.name, plot_load(series, title), caption))
            subsection.add(*(Para(f"{caption}: {note}", "note") for note in notes))
        section.add(subsection)
    return section


def about_section(results: Results) -> Section:
    started = sorted(c.get("started_at", "") for c in results.cells.values() if c.get("started_at"))
    span = f"between {when(started[0])} and {when(started[-1])}" if started else "none found"
    return Section("about", "How this report was made", [
        Para(f"Generated {when(dt.datetime.now(dt.timezone.utc).isoformat())} by `python -m reporting.report` "
             f"(`make report`) from `{shown_path(results.results_dir)}`: {len(results.cells)} scenario results (runs {span}) "
             f"and {len(results.loads)} load results, each the `latest` run of its cell."),
        Bullets(["reproduce every cell: `make reproduce DB=all` (one cause: `make <cause> DB=...`, with its timeline)",
                 "see one bug as code: `make diff CAUSE=<cause>`",
                 "run a load: `make load CAUSE=<cause> DB=...`",
                 "rebuild this page: `make report`"]),
    ])


def answer_document(results: Results, sections: list[Section]) -> Document:
    """reports/answer.md: the consultant's answer to the client, from the same runs as the report."""
    return Document("Your transactions page and stale data: our answer, point by point",
                    f"Generated {when(dt.datetime.now(dt.timezone.utc).isoformat())} by `make report` from the "
                    f"stored results of real runs on {answer.servers(results)}; every verdict below is read from them.",
                    sections)


def build(results: Results, answer_sections: list[Section]) -> Document:
    versions = ", ".join(results.server_name(b) for b in results.backends_with_results()) or "no backend"
    sections = [summary_section(results),
                Section("answer", "The answer to the client, point by point",
                        answer_sections),
                matrix_section(results), missing_section(results),
                Section("causes", "Causes, one by one", [cause_section(results, c) for c in results.names("cause")]),
                Section("myths", "Myths, settled per backend", [myth_section(results, m) for m in results.names("myth")]),
                load_section(results), plots_section(results), about_section(results)]
    return Document("Stale data in Flask + SQLAlchemy: what the lab proved",
                    f"Verdicts from real runs on {versions}; every figure below is read from the stored results.",
                    sections)


# ---- running what is missing -------------------------------------------------------------

def answering_backends(wanted: str) -> tuple[list[str], list[str]]:
    """The backends to run and plain notes on those left out. `auto`: SQLite plus every server that answers."""
    from scenarios.__main__ import check_backend

    if wanted not in ("auto", "all", *databases.BACKENDS):
        raise SystemExit(f"--db must be auto, all or one of {', '.join(databases.BACKENDS)}")
    if wanted not in ("auto", "all"):
        return [wanted], []
    chosen, notes = ["sqlite"], []
    for backend in databases.BACKENDS[1:]:
        try:
            check_backend(backend)
            chosen.append(backend)
        except databases.BackendUnavailable as error:
            notes.append(f"{BACKEND_NAMES[backend]} was not run by this `make report` ({error}); "
                         "what this report shows of it, if anything, comes from earlier runs.")
    if wanted == "all" and notes:  # asked for explicitly: say so loudly, the report still shows the rest
        print("\n".join(notes), file=sys.stderr)
    return chosen, notes


def run_missing(results_dir: Path, wanted: str, load: dict[str, Any]) -> list[str]:
    """Run the scenario cells with no result and, per backend without any load result, one short load."""
    backends, notes = answering_backends(wanted)
    current = collect(results_dir)
    for backend in backends:
        causes = [cause for cause in current.modules for app in current.apps(cause)
                  if (cause, app, backend) not in current.cells
                  and current.want(cause, app, backend).get("verdict") != verdicts.NOT_APPLICABLE]
        causes = list(dict.fromkeys(causes))
        if causes:
            command = [sys.executable, "-m", "scenarios", "--db", backend]
            if len(causes) < len(current.modules):  # only the causes with a cell missing
                command += ["--cause", ",".join(causes)]
            print("$ " + " ".join(command[1:]), flush=True)
            status = subprocess.call(command, cwd=REPO_ROOT)
            if status not in (0, 1):  # 1: some cell not as expected; the report shows which
                notes.append(f"`python -m scenarios --db {backend}` could not run (exit status {status}).")
    # The page in Chromium at the moment each of these causes shows: taken by this run, on SQLite.
    command = [sys.executable, "-m", "scenarios", "--db", "sqlite", "--cause", ",".join(SCREENSHOT_CAUSES)]
    print("$ LAB_SCREENSHOTS=1 " + " ".join(command[1:]), flush=True)
    if subprocess.call(command, cwd=REPO_ROOT, env={**os.environ, SCREENSHOTS_VARIABLE: "1"}) not in (0, 1):
        notes.append("the screenshots of the page in Chromium could not be taken (see the output of `make report`).")
    if claims.latest_measurements(results_dir / "claims") is None:  # claims 10 and 11 of the answer
        print("$ measuring claims 10 and 11 (reporting/claims.py)", flush=True)
        claims.store_measurements(claims.measure(backends), results_dir / "claims")
    for backend in backends:
        if not any(l.backend == backend for l in current.loads):
            command = [sys.executable, "-m", "loadtests", "--cause", load["cause"], "--db", backend,
                       "--duration", str(load["duration"]), "--users", str(load["users"])]
            print("$ " + " ".join(command[1:]), flush=True)
            if subprocess.call(command, cwd=REPO_ROOT) != 0:
                notes.append(f"the short load `{load['cause']}` on {BACKEND_NAMES[backend]} did not complete.")
    return notes


def make_report(results_dir: Path, out_dir: Path, notes: list[str] | None = None) -> tuple[Path, Path]:
    results = collect(results_dir, notes)
    (out_dir / "answer.md").parent.mkdir(parents=True, exist_ok=True)
    # The answer, settled once: reports/answer.md and a section of the report show the same.
    sections = answer.answer_sections(results, claims.latest_measurements(results.results_dir / "claims"))
    (out_dir / "answer.md").write_text(to_markdown(answer_document(results, sections), "answer-images"))
    return write(build(results, sections), out_dir)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m reporting.report", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", type=Path, default=runner.RESULTS_DIR, help="results folder (default: results/)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "reports", help="where to write (default: reports/)")
    parser.add_argument("--run-missing", action="store_true", help="first run the scenario cells and load that are missing")
    parser.add_argument("--db", default="auto",
                        help="with --run-missing: auto (SQLite and every server that answers), all, sqlite, postgresql, mariadb")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    if args.run_missing and args.results.resolve() != runner.RESULTS_DIR.resolve():
        parser.error("--run-missing writes to results/ (where the scenario and load runners store): drop --results")
    notes = run_missing(args.results, args.db, DEFAULT_LOAD) if args.run_missing else []
    for note in notes:
        print("note:", note)
    html_path, md_path = make_report(args.results, args.out, notes)
    print(f"wrote {shown_path(html_path)} "
          f"and {md_path.name} (images in {md_path.stem}-images/), and answer.md")
    russian = write_long_operations_ru(args.out, args.db if args.run_missing else None)
    print(f"wrote {shown_path(russian)}" if russian else
          "no long-operations measurement stored: reports/long-operations.ru.md not written "
          "(`make report` measures it, or `python -m reporting.long_operations_ru`)")
    return 0


def write_long_operations_ru(out_dir: Path, measure_on: str | None) -> Path | None:
    """reports/long-operations.ru.md from the latest stored long_operations measurements; with
    `measure_on` (make report's --db), measured first on those backends when none is stored."""
    from reporting import long_operations_ru

    found = long_operations_ru.latest()
    if found is None and measure_on is not None:
        measured = long_operations_ru.measure(answering_backends(measure_on)[0])
        long_operations_ru.store(measured)
        found = long_operations_ru.latest()
    if found is None:
        return None
    measurements, when = found
    return long_operations_ru.write(measurements, out_dir / "long-operations.ru.md", when)


if __name__ == "__main__":
    sys.exit(main())
