"""A bounded burst of concurrent reads and edits, and what the app's log says about it.

For bugs that only show when requests overlap (one Session or connection shared by threads).
Overlap cannot be steered with holds (a hold touches no session), so it is made overwhelming
instead - many requests, more in flight than the server has threads - and then *checked*: the
result says how many threads answered and whether answers from different threads were in
flight at the same time. A burst without that evidence proves nothing either way.
"""

from __future__ import annotations

import http.client
import re
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from lab.harness.server import Actor, GunicornServer

# The last line of each traceback the app logged (the exception behind a 500), and the
# master's note that a worker died from a signal (e.g. SIGBUS, SIGSEGV in a C extension).
_EXCEPTION = re.compile(r"^([a-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception)): ", re.MULTILINE)
_WORKER_KILLED = re.compile(r"Worker \(pid:\d+\) was sent (SIG\w+)")


def mixed_burst(actor: Actor, row_id: int, version: int, requests: int, parallel: int,
                edit_every: int) -> dict[str, Any]:
    """Send `requests` requests `parallel` at a time: every `edit_every`-th a label edit of
    `row_id` carrying `version` (the first one wins, the rest get 409), the others page reads.
    Returns each request's outcome and a summary; never raises for a failed request."""

    def one(number: int) -> dict[str, Any]:
        edit = number % edit_every == 0
        try:
            if edit:
                reply = actor.post_json(f"/api/transactions/{row_id}/label",
                                        {"label": f"burst {number}", "version": version})
            else:
                reply = actor.get("/api/transactions", limit="5")
        except (OSError, http.client.HTTPException) as error:  # reset, cut short, timed out: the worker died or hung
            return {"edit": edit, "status": 0, "error": type(error).__name__, "served_by": "?"}
        return {"edit": edit, "status": reply.status, "served_by": reply.served_by,
                "sent_at": reply.sent_at, "received_at": reply.received_at}

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        outcomes = list(pool.map(one, range(requests)))
    statuses: dict[str, int] = {}
    for outcome in outcomes:
        key = str(outcome["status"]) if outcome["status"] else outcome["error"]
        statuses[key] = statuses.get(key, 0) + 1
    answered = [o for o in outcomes if o["status"] and o["served_by"] != "?"]
    return {
        "requests": requests,
        "parallel": parallel,
        "edits": sum(1 for o in outcomes if o["edit"]),
        "statuses": statuses,
        "failed": sum(1 for o in outcomes if not o["status"] or o["status"] >= 500),
        "threads": sorted({o["served_by"] for o in answered}),
        "overlapping_pairs": _overlapping_pairs(answered),
    }


def _overlapping_pairs(answered: list[dict[str, Any]]) -> int:
    """Pairs of requests answered by different threads while both were in flight (capped)."""
    ordered = sorted(answered, key=lambda o: o["sent_at"])
    pairs = 0
    for i, first in enumerate(ordered):
        for second in ordered[i + 1:]:
            if second["sent_at"] >= first["received_at"]:
                break
            if second["served_by"] != first["served_by"]:
                pairs += 1
                if pairs >= 1000:
                    return pairs
    return pairs


def log_offset(server: GunicornServer) -> int:
    return len(server.log_path.read_text(errors="replace"))


def logged_failures(server: GunicornServer, since: int) -> dict[str, Any]:
    """Exceptions the app logged after offset `since`, by class name, and workers killed by a signal."""
    text = server.log_path.read_text(errors="replace")[since:]
    exceptions: dict[str, int] = {}
    for _module, name in _EXCEPTION.findall(text):
        exceptions[name] = exceptions.get(name, 0) + 1
    ranked = dict(sorted(exceptions.items(), key=lambda item: -item[1]))
    return {"exceptions": ranked, "workers_killed": _WORKER_KILLED.findall(text)}
