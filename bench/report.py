"""The benchmark's targets, its printed table and its JSON file.

Targets are printed beside the figures as met / not met; nothing here fails a run.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lab.results import link_latest, new_run_dir

SCHEMA_VERSION = 1
IN_PROCESS_P50_MS = 10.0
DEEP_OVER_FIRST = 1.5
OVERHEAD_P50_MS = 3.0
STATEMENTS_PER_REQUEST = 3
SEED_SECONDS = 60.0  # the issue sets it for PostgreSQL
SEED_PEAK_MB = 500.0


@dataclass
class Target:
    name: str
    met: bool
    value: str  # the worst figure, in words
    detail: str = ""

    def line(self) -> str:
        mark = "met    " if self.met else "NOT MET"
        return f"  [{mark}] {self.name}: {self.value}" + (f" ({self.detail})" if self.detail else "")

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "met": self.met, "value": self.value, "detail": self.detail}


def _label(row: dict[str, Any]) -> str:
    return f"{row['case']} p{row['page']}"


def evaluate(result: dict[str, Any]) -> list[Target]:
    rows = result["positions"]
    backend = result["backend"]
    targets = []

    slow = sorted((r for r in rows if r["in_process"]["p50_ms"] >= IN_PROCESS_P50_MS),
                  key=lambda r: -r["in_process"]["p50_ms"])
    worst = max(rows, key=lambda r: r["in_process"]["p50_ms"])
    targets.append(Target(
        f"in-process p50 under {IN_PROCESS_P50_MS:g} ms for every case at every depth",
        not slow, f"worst {worst['in_process']['p50_ms']:.1f} ms ({_label(worst)})",
        f"{len(slow)} of {len(rows)} positions over: " + ", ".join(
            f"{_label(r)} {r['in_process']['p50_ms']:.1f}" for r in slow[:6]) + (" ..." if len(slow) > 6 else "")
        if slow else f"all {len(rows)} positions"))

    ratios = []
    for row in rows:
        if row["page"] == result["settings"]["deep_page"]:
            first = next(r for r in rows if r["case"] == row["case"] and r["page"] == 1)
            ratios.append((row["in_process"]["p50_ms"] / first["in_process"]["p50_ms"], row))
    if ratios:
        ratio, row = max(ratios, key=lambda item: item[0])
        targets.append(Target(
            f"page {result['settings']['deep_page']:,} within {DEEP_OVER_FIRST:g}x of the first (in-process p50)",
            ratio <= DEEP_OVER_FIRST, f"worst {ratio:.2f}x ({row['case']})",
            ", ".join(f"{r['case']} {x:.2f}x" for x, r in ratios)))

    over = [r for r in rows if r["overhead_ms"] >= OVERHEAD_P50_MS]
    worst = max(rows, key=lambda r: r["overhead_ms"])
    median_overhead = sorted(r["overhead_ms"] for r in rows)[len(rows) // 2]
    targets.append(Target(
        f"app overhead over the floor under {OVERHEAD_P50_MS:g} ms at p50",
        not over, f"worst +{worst['overhead_ms']:.1f} ms ({_label(worst)}), median +{median_overhead:.1f} ms",
        f"{len(over)} of {len(rows)} positions over" if over else f"all {len(rows)} positions"))

    sizes = result["statements_by_page_size"]
    most = max(max(len(r["statements"]) for r in rows), max(len(v) for v in sizes.values()))
    same = len({len(v) for v in sizes.values()}) == 1
    targets.append(Target(
        f"at most {STATEMENTS_PER_REQUEST} SQL statements per page request, whatever the page size",
        most <= STATEMENTS_PER_REQUEST and same,
        f"{most} at most",
        "per page size: " + ", ".join(f"{k}: {'+'.join(v)}" for k, v in sizes.items())
        + (f"; plus {result['pings_per_request']} pool pre-ping per request" if result["pings_per_request"] else "")))

    seeding = result["dataset"]
    scope = "" if backend == "postgresql" else " (the issue's target is for PostgreSQL)"
    targets.append(Target(
        f"seeding {result['size']:,} rows under {SEED_SECONDS:g} s{scope}",
        seeding["seed_seconds"] < SEED_SECONDS, f"{seeding['seed_seconds']:.1f} s",
        "measured when the data set was made" + (f", {seeding['seeded_at']}; reused by this run" if seeding["reused"] else " by this run")))
    targets.append(Target(
        f"seeding peak memory under {SEED_PEAK_MB:g} MB", seeding["seed_peak_mb"] < SEED_PEAK_MB,
        f"{seeding['seed_peak_mb']:.0f} MB", "maxrss of the loading process"))
    return targets


def table(result: dict[str, Any]) -> str:
    """The per-position figures, one line each (milliseconds)."""
    head = (f"{'case':<29} {'page':>6} {'matches':>9}  {'floor p50/p95':>13} {'(count)':>7}  "
            f"{'in-proc p50/p95':>15} {'(CPU)':>5}  {'http p50/p95':>13}  {'overhead':>8} {'ratio':>6}  "
            f"{'OFFSET p50':>10} {'vs keyset':>9}  {'SQL':>3}")
    lines = [head, "-" * len(head)]
    for row in result["positions"]:
        http = row["http"]
        offset = row["offset"]
        offset_text = f"{offset['p50_ms']:10.1f}" if offset else f"{'failed' if row['offset_error'] else '-':>10}"
        versus = f"{offset['p50_ms'] / row['in_process']['p50_ms']:8.1f}x" if offset else f"{'':>9}"
        lines.append(
            f"{row['case'][:29]:<29} {row['page']:>6,} {row['matches']:>9,}  "
            f"{row['floor']['p50_ms']:6.1f}/{row['floor']['p95_ms']:<6.1f} {row['floor_count']['p50_ms']:7.1f}  "
            f"{row['in_process']['p50_ms']:7.1f}/{row['in_process']['p95_ms']:<7.1f} {row['in_process_cpu']['p50_ms']:5.1f}  "
            + (f"{http['p50_ms']:6.1f}/{http['p95_ms']:<6.1f}" if http else f"{'-':>13}")
            + f"  {row['overhead_ms']:+8.1f} {row['ratio']:5.1f}x  {offset_text} {versus}  {len(row['statements']):>3}"
        )
    return "\n".join(lines)


def header(result: dict[str, Any]) -> str:
    seeding = result["dataset"]
    how = (f"reused (seeded {seeding['seeded_at']} in {seeding['seed_seconds']:.1f} s, peak {seeding['seed_peak_mb']:.0f} MB)"
           if seeding["reused"] else f"seeded now in {seeding['seed_seconds']:.1f} s, peak {seeding['seed_peak_mb']:.0f} MB")
    settings = result["settings"]
    load = result["load_average"]
    return (f"== {result['server_version']}: {result['size']:,} transactions, {how}\n"
            f"   page size {settings['page_size']}, up to {settings['repeat']} samples per figure, milliseconds.\n"
            f"   floor = the app's own statements on a plain connection ((count) = the capped count alone);\n"
            f"   (CPU) = this process's CPU time per in-process request; overhead = in-process p50 - floor p50;\n"
            f"   ratio = in-process p50 / floor p50; SQL = statements per request. Load average "
            f"{load['before'][0]:.1f} before, {load['after'][0]:.1f} after, on {settings['cpus']} CPUs"
            + (" (busy machine: wall times are inflated)" if max(load['before'][0], load['after'][0]) > settings['cpus'] else ""))


def run_directory(results_dir: Path, backend: str, started: dt.datetime) -> Path:
    """results/<backend>/bench/<timestamp>/ (made now: the gunicorn log goes there too)."""
    return new_run_dir(results_dir / backend / "bench", started)


def write(result: dict[str, Any], run_dir: Path) -> Path:
    """bench.json in the run's folder, and a `latest` link beside the folder."""
    path = run_dir / "bench.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    link_latest(run_dir)
    return path
