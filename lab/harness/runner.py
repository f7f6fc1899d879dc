"""Run scenarios cell by cell (cause x app x backend), store results, compare with expectations.

Results: results/<backend>/<cause>/<app>/<timestamp>/result.json with a `latest` link per
folder. The expected verdict of every cell is in scenarios/expected_matrix.json; a cell may be
N/A only if that file says so, with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
import traceback
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

from sqlalchemy import create_engine

from lab import databases, seed
from lab.engine import REPO_ROOT, configure_engine, engine_options, server_version
from lab.harness.scenario import Cause, Scenario, doctor_causes, doctor_findings, doctor_requested
from lab.harness.verdicts import INCONCLUSIVE, NOT_APPLICABLE, Judgement
from lab.results import link_latest, new_run_dir

RESULT_SCHEMA_VERSION = 1
RESULTS_DIR = REPO_ROOT / "results"
EXPECTED_MATRIX = REPO_ROOT / "scenarios" / "expected_matrix.json"
SCENARIO_SEED_SIZE = 200


def load_expected() -> dict[str, dict[str, dict[str, Any]]]:
    """cause -> app -> backend -> {"verdict": ..., "reason"?: ...}."""
    return json.loads(EXPECTED_MATRIX.read_text())["cells"]


@dataclass
class CellResult:
    cause: str
    app: str
    backend: str
    verdict: str
    proof: str
    staleness: str
    server_version: str
    path: str | None = None
    doctor: list[str] | None = None  # causes the doctor reported (make doctor), None when it was not installed


def run_cell(module: ModuleType, app: str, backend: str, echo: Callable[[str], None]) -> CellResult:
    """Run one scenario for one app on one backend; never raises, INCONCLUSIVE on failure."""
    cause: Cause = module.CAUSE
    expected = load_expected().get(cause.name, {}).get(app, {}).get(backend, {})
    if expected.get("verdict") == NOT_APPLICABLE:
        echo(f"[{cause.name} | {app} | {backend}] N/A: {expected.get('reason', '')}")
        return CellResult(cause.name, app, backend, NOT_APPLICABLE, expected.get("reason", ""), "none", "")

    started = dt.datetime.now(dt.timezone.utc)
    workdir = Path(tempfile.mkdtemp(prefix=f"lab-{cause.name}-{app}-{backend}-"))
    echo(f"[{cause.name} | {app} | {backend}] {cause.title}")
    observations: dict[str, Any] = {}
    doctor: dict[str, Any] | None = None
    version = ""
    scenario: Scenario | None = None
    db_url = ""
    clock = time.perf_counter()
    try:
        # Private per test worker or process: the same cell may run in two places at once.
        worker = databases.owner_tag(f"p{os.getpid()}")
        db_url = databases.private_database(backend, f"lab_scn_{worker}_{cause.name}_{app}"[:63], workdir)
        version = prepare_database(db_url, SCENARIO_SEED_SIZE)
        scenario = Scenario(cause, app, cause.app_modules[app], backend, db_url, workdir, echo)
        observations = module.run(scenario)
        judgement: Judgement = module.judge(observations)
    except Exception as error:  # a run that could not decide is reported, never hidden
        judgement = Judgement(INCONCLUSIVE, f"the run failed: {type(error).__name__}: {error}")
        observations.setdefault("error", traceback.format_exc())
    finally:
        if scenario is not None:
            scenario.close()  # stops servers and holds, disposes engines
            doctor = read_doctor_findings(scenario)
        if db_url:
            try:
                databases.drop_database(db_url)  # also ends sessions a broken app left open
            except Exception as error:
                echo(f"      warning: could not drop {db_url}: {error}")
    echo(f"  => {judgement.verdict}: {judgement.proof}" + (f" (staleness in the {judgement.staleness})" if judgement.staleness != "none" else ""))
    result = {
        "schema_version": RESULT_SCHEMA_VERSION,
        "cause": cause.name,
        "kind": cause.kind,
        "title": cause.title,
        "app": app,
        "module": cause.app_modules[app],
        "backend": backend,
        "server_version": version,
        "started_at": started.isoformat(),
        "duration_seconds": round(time.perf_counter() - clock, 3),
        "verdict": judgement.verdict,
        "proof": judgement.proof,
        "staleness": judgement.staleness,
        "observations": observations,
        "timeline": [asdict(step) for step in (scenario.steps if scenario else [])],
    }
    if doctor is not None:
        result["doctor"] = doctor
    if scenario is not None and scenario.screenshots:
        result["screenshots"] = scenario.screenshots
    path = _store(result, backend, cause.name, app, started)
    for shot in result.get("screenshots", []):  # beside result.json, as the report reads them
        shutil.copy(workdir / "screens" / shot["file"], path.parent / shot["file"])
    shutil.rmtree(workdir, ignore_errors=True)
    return CellResult(cause.name, app, backend, judgement.verdict, judgement.proof, judgement.staleness, version, str(path),
                      doctor=doctor["causes"] if doctor is not None else None)


def read_doctor_findings(scenario: Scenario) -> dict[str, Any] | None:
    """What the doctor wrote while the scenario's apps ran (after they stopped), if it was installed."""
    if not doctor_requested():
        return None
    findings = doctor_findings(scenario.doctor_path)
    return {"causes": doctor_causes(findings), "findings": findings}


def prepare_database(db_url: str, size: int) -> str:
    """Create the schema, seed `size` deterministic rows, and name the server that holds them."""
    engine = configure_engine(create_engine(db_url, **engine_options(db_url)))
    try:
        seed.create_schema(engine)
        seed.seed(engine, size)
        return server_version(engine)
    finally:
        engine.dispose()


def _store(result: dict[str, Any], backend: str, cause: str, app: str, started: dt.datetime) -> Path:
    run_dir = new_run_dir(RESULTS_DIR / backend / cause / app, started)
    path = run_dir / "result.json"
    path.write_text(json.dumps(result, indent=2, default=str) + "\n")
    link_latest(run_dir)
    return path


def compare(results: list[CellResult]) -> list[str]:
    """Every cell whose verdict differs from the expected matrix (INCONCLUSIVE always does)."""
    expected = load_expected()
    problems = []
    for cell in results:
        want = expected.get(cell.cause, {}).get(cell.app, {}).get(cell.backend, {}).get("verdict")
        if want is None:
            problems.append(f"{cell.cause} | {cell.app} | {cell.backend}: no expected verdict in {EXPECTED_MATRIX.name}")
        elif cell.verdict != want:
            problems.append(f"{cell.cause} | {cell.app} | {cell.backend}: expected {want}, got {cell.verdict} ({cell.proof})")
    return problems


def matrix_table(results: list[CellResult], backends: list[str]) -> str:
    """The verdict matrix as a Markdown table: rows causes, columns app x backend."""
    by_cell = {(c.cause, c.app, c.backend): c for c in results}
    versions = {c.backend: c.server_version for c in results if c.server_version}
    causes = list(dict.fromkeys(c.cause for c in results))
    apps = list(dict.fromkeys(c.app for c in results))
    columns = [(app, backend) for app in apps for backend in backends]
    header = "| cause | " + " | ".join(f"{app} · {versions.get(b, b)}" for app, b in columns) + " |"
    lines = [header, "|" + "---|" * (len(columns) + 1)]
    for cause in causes:
        cells = [by_cell[(cause, app, b)].verdict if (cause, app, b) in by_cell else "" for app, b in columns]
        lines.append(f"| {cause} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def matrices(results: list[CellResult], backends: list[str], kinds: dict[str, str]) -> str:
    """The causes table and the myths table, each under a heading."""
    parts = []
    for kind, title in (("cause", "Causes (broken and fixed app)"), ("myth", "Myths (the claim, and the cure)")):
        rows = [r for r in results if kinds.get(r.cause) == kind]
        if rows:
            parts.append(f"{title}\n\n{matrix_table(rows, backends)}")
    return "\n\n".join(parts)


README = REPO_ROOT / "README.md"
MATRIX_START, MATRIX_END = "<!-- matrix:start", "<!-- matrix:end -->"


DOCTOR_START, DOCTOR_END = "<!-- doctor:start", "<!-- doctor:end -->"


def write_readme_matrix(tables: str, markers: tuple[str, str] = (MATRIX_START, MATRIX_END)) -> None:
    """Replace what stands between the given markers of README.md (the matrix's) with `tables`."""
    text = README.read_text()
    start = text.index(markers[0])
    start = text.index("\n", start) + 1
    end = text.index(markers[1])
    README.write_text(text[:start] + tables + "\n" + text[end:])


def readme_matrix_cells() -> dict[tuple[str, str, str], str]:
    """(cause, app, backend) -> verdict, as the README's generated tables state them."""
    text = README.read_text()
    block = text[text.index(MATRIX_START):text.index(MATRIX_END)]
    cells: dict[tuple[str, str, str], str] = {}
    columns: list[tuple[str, str]] = []
    for line in block.splitlines():
        if line.startswith("| cause |"):
            columns = [_column(header) for header in line.strip("|").split("|")[1:]]
        elif line.startswith("| ") and columns:
            name, *verdicts = [cell.strip() for cell in line.strip().strip("|").split("|")]
            for (app, backend), verdict in zip(columns, verdicts):
                if verdict:
                    cells[(name, app, backend)] = verdict
    return cells


def _column(header: str) -> tuple[str, str]:
    app, server = (part.strip() for part in header.split("·"))
    return app, {"SQLite": "sqlite", "PostgreSQL": "postgresql", "MariaDB": "mariadb"}[server.split()[0]]
