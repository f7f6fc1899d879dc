"""The side-by-side table (terminal), and the same figures as CSV rows and JSON."""

from __future__ import annotations

import csv
import io
from typing import Any

from loadtests.runner import AppRun, LoadOptions

CSV_FIELDS = [
    "backend", "server_version", "cause", "app", "module", "workers", "threads", "preload", "users",
    "duration_s", "distributed", "requests", "locust_counted", "requests_per_second", "p50_ms", "p95_ms", "p99_ms", "reads",
    "edits", "acknowledged", "conflicts", "stale_reads", "stale_share", "oldest_staleness_s", "lost_writes",
    "errors", "repeated_row_pages", "blind_overwrites", "locust_cpu_s", "locust_wall_s", "locust_cpu_per_wall", "list_rps", "ping_rps", "list_to_ping",
    "failure",
]


def csv_rows(backend: str, cause: str, options: LoadOptions, runs: list[AppRun]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        summary = run.report.summary() if run.report else {}
        ratio = run.ratio or {}
        rows.append({
            "backend": backend, "server_version": run.server_version, "cause": cause, "app": run.app,
            "module": run.module, "workers": run.profile.workers, "threads": run.profile.threads,
            "preload": run.profile.preload, "users": options.users, "duration_s": options.duration,
            "distributed": options.distributed, "requests": run.stats.get("requests"),
            "locust_counted": run.stats.get("locust_counted"),
            "requests_per_second": run.stats.get("requests_per_second"), "p50_ms": run.stats.get("p50_ms"),
            "p95_ms": run.stats.get("p95_ms"), "p99_ms": run.stats.get("p99_ms"), "reads": summary.get("reads"),
            "edits": summary.get("edits"), "acknowledged": summary.get("acknowledged"),
            "conflicts": summary.get("conflicts"), "stale_reads": summary.get("stale_reads"),
            "stale_share": summary.get("stale_share"), "oldest_staleness_s": summary.get("oldest_staleness_seconds"),
            "lost_writes": summary.get("lost_writes"), "errors": summary.get("errors"),
            "repeated_row_pages": summary.get("repeated_row_pages"), "blind_overwrites": summary.get("blind_overwrites"),
            "locust_cpu_s": round(run.cpu_seconds, 2), "locust_wall_s": round(run.wall_seconds, 2),
            "locust_cpu_per_wall": round(run.cpu_share, 3),
            "list_rps": ratio.get("list", {}).get("requests_per_second"),
            "ping_rps": ratio.get("ping", {}).get("requests_per_second"), "list_to_ping": ratio.get("list_to_ping"),
            "failure": run.failure or "",
        })
    return rows


def to_csv(rows: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def side_by_side(backend: str, cause: str, options: LoadOptions, runs: list[AppRun]) -> str:
    """Metrics down, apps across: what a person compares at a glance."""
    version = next((r.server_version for r in runs if r.server_version), backend)
    mode = "locust master + 2 workers" if options.distributed else "one locust process"
    title = (f"load: {cause} on {version}, {options.users} users ({options.reader_weight} readers : "
             f"{options.writer_weight} writers) for {options.duration} s, {options.size:,} rows, {mode}")
    lines = [(metric, [cell(metric, run) for run in runs]) for metric in METRICS]
    header = ["", *[f"{run.app} ({run.module})" for run in runs]]
    widths = [max(len(header[i]), *(len(values[i - 1]) if i else len(name) for name, values in lines))
              for i in range(len(header))]
    out = [title, "  ".join(h.ljust(w) for h, w in zip(header, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(text.ljust(w) for text, w in zip([name, *values], widths)) for name, values in lines]
    notes = [f"{run.app} server log: " + ", ".join(f"{name} x{count}" for name, count
                                                  in list(run.server_exceptions.items())[:4])
             for run in runs if run.server_exceptions]
    failures = [f"FAILED {run.app}: {run.failure}" for run in runs if run.failure]
    return "\n".join(out + notes + failures)


METRICS = ["gunicorn", "requests", "requests/s", "p50 / p95 / p99 ms", "reads; edits (acknowledged, 409)",
           "stale reads (share, oldest)", "lost writes", "errors", "(info) pages repeating a row",
           "(info) blind overwrites", "load generator CPU", "list page / ping req/s"]


def cell(metric: str, run: AppRun) -> str:
    stats, report = run.stats, run.report
    if metric == "gunicorn":
        return run.profile.describe()
    if metric == "list page / ping req/s":
        if not run.ratio:
            return "-"
        lst, ping = run.ratio["list"], run.ratio["ping"]
        return f"{lst['requests_per_second']:.0f} / {ping['requests_per_second']:.0f} = {run.ratio['list_to_ping']}"
    if metric == "load generator CPU":
        return f"{run.cpu_seconds:.1f} s in {run.wall_seconds:.1f} s = {run.cpu_share:.2f} core" if run.wall_seconds else "-"
    if not stats or report is None:
        return "-"
    if metric == "requests":
        return f"{stats['requests']:,} (locust counted {stats['locust_counted']:,})"
    if metric == "requests/s":
        return f"{stats['requests_per_second']:.1f}"
    if metric == "p50 / p95 / p99 ms":
        return f"{stats['p50_ms']:.0f} / {stats['p95_ms']:.0f} / {stats['p99_ms']:.0f}"
    if metric == "reads; edits (acknowledged, 409)":
        return f"{report.reads:,}; {report.edits:,} ({report.acknowledged:,}, {report.conflicts:,})"
    if metric == "stale reads (share, oldest)":
        judged = (f"; own writes only, {report.behind_others_only:,} more behind other users' edits"
                  if report.own_writes_only else "")
        return f"{report.stale_count:,} ({report.stale_share:.1%}, {report.oldest_staleness_seconds:.2f} s{judged})"
    if metric == "lost writes":
        return f"{report.lost_count:,}"
    if metric == "errors":
        kinds = ", ".join(f"{kind} {count}" for kind, count in report.errors_by_kind.items())
        return f"{report.error_count:,}" + (f" ({kinds})" if kinds else "")
    if metric == "(info) pages repeating a row":
        return f"{len(report.repeated_rows):,}"
    if metric == "(info) blind overwrites":
        return f"{len(report.blind_overwrites):,}"
    raise ValueError(metric)
