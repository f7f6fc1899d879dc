"""`flask stale-doctor report`: one block per cause from the findings file."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

from .causes import CAUSES, LAB_URL


def summarize(findings: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """cause -> {count, subjects, endpoints, locations, first} (repeats counted once per subject, at their max)."""
    by_cause: dict[str, dict[str, Any]] = defaultdict(lambda: {"subjects": {}, "endpoints": Counter(),
                                                               "locations": Counter(), "first": None})
    for finding in findings:
        block = by_cause[finding["cause"]]
        subject = finding.get("subject", "")
        count = int(finding.get("occurrences", 1))
        block["subjects"][subject] = max(block["subjects"].get(subject, 0), count)
        evidence = finding.get("evidence", {})
        where = evidence.get("request") or evidence.get("job") or {}
        if where:
            name = (f"{where.get('method', '')} {where.get('endpoint') or where.get('path', '')}".strip()
                    if where.get("kind") == "request" else f"job {where.get('job')}")
            block["endpoints"][name] += 1
        if evidence.get("location"):
            block["locations"][evidence["location"]] += 1
        if block["first"] is None or finding.get("at", "") < block["first"].get("at", ""):
            block["first"] = finding
    for block in by_cause.values():
        block["count"] = sum(block["subjects"].values())
    return dict(sorted(by_cause.items(), key=lambda item: -item[1]["count"]))


def render(findings: list[dict[str, Any]], source: str) -> str:
    summary = summarize(findings)
    if not summary:
        return f"stale-doctor: no findings in {source}: no cause of stale data seen while it watched."
    lines = [f"stale-doctor report: {sum(b['count'] for b in summary.values())} occurrence(s) of "
             f"{len(summary)} cause(s), from {source}", ""]
    for cause, block in summary.items():
        info = CAUSES[cause]
        first = block["first"]
        lines.append(f"== {cause}: {info.title}")
        lines.append(f"   seen {block['count']} time(s), {len(block['subjects'])} distinct subject(s); first at {first.get('at')}")
        if block["endpoints"]:
            lines.append("   where: " + "; ".join(f"{name} x{n}" for name, n in block["endpoints"].most_common(3)))
        if block["locations"]:
            lines.append("   code:  " + "; ".join(f"{loc} x{n}" for loc, n in block["locations"].most_common(3)))
        lines.append(f"   first proof: {first.get('proof')}")
        evidence = first.get("evidence", {})
        shown = {k: evidence[k] for k in ("session", "server_connection_id", "isolation_level",
                                          "transaction_age_seconds", "pid", "thread") if evidence.get(k) is not None}
        if shown:
            lines.append("   evidence: " + ", ".join(f"{k}={v}" for k, v in shown.items()))
        lines.append(f"   cure: {info.cure}")
        lines.append(f"   see it happen: `{info.make_target}` and {info.notebook} in the stale-data lab ({LAB_URL})")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"
