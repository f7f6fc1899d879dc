"""Plots of one load from its raw per-request logs: stale reads and latency over time, broken against fixed.

Which reads were stale is decided by loadtests.checker itself, re-run on the logged requests
and the rows audited after the run, so a plot can never disagree with the load's table about
what "stale" means. Matplotlib's Agg canvas is used directly: no display, no global pyplot state.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from loadtests import checker
from loadtests.runner import read_logs

COLOURS = {"broken": "#c0392b", "fixed": "#1f618d"}
MAX_BINS = 120  # a long load gets wider bins, not a thousand-point line


@dataclass
class AppSeries:
    """One app's main load phase, in seconds since its first request."""

    app: str
    sent: np.ndarray  # every request
    latency_ms: np.ndarray  # every request, same order
    stale_sent: np.ndarray  # the reads the checker found stale
    reads: int
    stale: int

    @property
    def span(self) -> float:
        return float(self.sent.max()) if self.sent.size else 0.0


def app_series(app: str, app_dir: Path) -> AppSeries | None:
    """The app's request log judged by the checker; None when the raw log is not there."""
    log_dir = app_dir / "requests-main"
    if not any(log_dir.glob("requests-*.jsonl")):
        return None
    records = read_logs(log_dir)
    if not records:
        return None
    audit_path = app_dir / "audit.json"
    audit = {int(row): checker.AuditRow(**values) for row, values in json.loads(audit_path.read_text()).items()} \
        if audit_path.exists() else {}
    report = checker.check(records, audit)
    start = min(r.sent for r in records)
    return AppSeries(
        app=app,
        sent=np.array([r.sent - start for r in records]),
        latency_ms=np.array([(r.received - r.sent) * 1000 for r in records]),
        stale_sent=np.array([s.sent - start for s in report.stale_reads]),
        reads=report.reads,
        stale=report.stale_count,
    )


def plot_load(series: list[AppSeries], title: str) -> bytes:
    """Two panels, broken and fixed in each: stale reads per second; p50 and p95 latency per bin."""
    span = max(s.span for s in series)
    width = max(1.0, span / MAX_BINS)
    edges = np.arange(0.0, span + width, width)
    if edges.size < 2:
        edges = np.array([0.0, width])
    centres = (edges[:-1] + edges[1:]) / 2

    figure = Figure(figsize=(11, 3.4), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    stale_axis, latency_axis = figure.subplots(1, 2)
    for s in series:
        colour = COLOURS.get(s.app, "#555555")
        per_second = np.histogram(s.stale_sent, bins=edges)[0] / width
        stale_axis.step(centres, per_second, where="mid", color=colour, linewidth=1.6,
                        label=f"{s.app}: {s.stale:,} stale of {s.reads:,} reads")
        bin_of = np.clip(np.digitize(s.sent, edges) - 1, 0, centres.size - 1)
        p50 = np.full(centres.size, np.nan)
        p95 = np.full(centres.size, np.nan)
        for index in np.unique(bin_of):
            values = s.latency_ms[bin_of == index]
            p50[index], p95[index] = np.percentile(values, 50), np.percentile(values, 95)
        latency_axis.plot(centres, p50, color=colour, linewidth=1.6, label=f"{s.app} p50")
        latency_axis.plot(centres, p95, color=colour, linewidth=1.0, linestyle="--", label=f"{s.app} p95")
    unit = "s" if width == 1.0 else f"{width:.1f} s bin"
    stale_axis.set(title="stale reads over time", xlabel="seconds into the load",
                   ylabel=f"stale reads per second ({unit})")
    latency_axis.set(title="latency over time", xlabel="seconds into the load", ylabel="ms (per bin)")
    stale_axis.set_ylim(0, max(1.0, stale_axis.get_ylim()[1]))  # no stale read: a flat line at 0, not a 0.05 scale
    latency_axis.set_ylim(bottom=0)
    for axis in (stale_axis, latency_axis):
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    figure.suptitle(title, fontsize=11)
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return buffer.getvalue()


def side_by_side(left_png: bytes, right_png: bytes, gap: int = 16) -> bytes:
    """Two screenshots in one PNG, left beside right, on white (Pillow: matplotlib's own dependency)."""
    from PIL import Image

    left, right = (Image.open(io.BytesIO(png)).convert("RGB") for png in (left_png, right_png))
    both = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)), "white")
    both.paste(left, (0, 0))
    both.paste(right, (left.width + gap, 0))
    out = io.BytesIO()
    both.save(out, format="PNG", optimize=True)
    return out.getvalue()
