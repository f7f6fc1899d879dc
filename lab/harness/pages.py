"""Reading the row under test from the HTML list page, as a user sees it (steps.py reads the API)."""

from __future__ import annotations

import html
import re
from typing import Any

from lab.harness.scenario import Scenario
from lab.harness.server import Actor
from lab.harness.steps import NEWEST, describe

# The first row of the list: its id and version (data attributes) and the label in its edit form.
_FIRST_ROW = re.compile(r'<tr data-id="(\d+)" data-version="(\d+)">.*?name="label" value="([^"]*)"', re.DOTALL)


def read_newest_html(s: Scenario, actor: Actor, expected: str) -> dict[str, Any]:
    """GET /transactions with the newest row only; record the step; return what was seen,
    in the shape of steps.read_newest (status 0: a 200 page without that row)."""
    reply = actor.get("/transactions", **NEWEST)
    seen: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "db_conn": reply.db_conn,
                            "sent_at": reply.sent_at, "received_at": reply.received_at}
    match = _FIRST_ROW.search(reply.text) if reply.status == 200 else None
    if match:
        seen.update(id=int(match[1]), version=int(match[2]), label=html.unescape(match[3]) or None)
    else:
        seen["status"] = 0 if reply.status == 200 else reply.status
        seen["error"] = reply.text[:300]
    s.step(actor.name, "GET /transactions?limit=1 (the HTML page)", expected, describe(seen), reply)
    return seen
