"""http_cache: the list page is answered from a view cache, so an acknowledged edit stays unseen.

Served by gunicorn with one sync worker (Flask-Caching's SimpleCache lives in that process).
Steps: alice opens the list page (HTML) and the API with the newest row, then edits its label
(200, committed); bob opens the same two URLs; the auditor reads the row from the database.

Staleness is in NEITHER the ORM nor the database: the edit is committed (the auditor sees it)
and no session is involved in bob's reads at all - lab mode's X-DB-Conn header says "none"
(no connection was checked out for the request) - because the view never ran: the response
stored for that URL by the first request was sent again. The staleness is in an HTTP-level
cache (the judgement's staleness field says "none", the proof says where it is).
"""

from __future__ import annotations

from typing import Any

from lab.harness.scenario import Cause, Scenario
from lab.harness.pages import read_newest_html
from lab.harness.steps import audit_row, edit_label, read_newest
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, LOST, STALE, Judgement

CAUSE = Cause("http_cache", "an edit is acknowledged and committed, but the page keeps the old label (a view cache)")

NEW_LABEL = "checked by alice"


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=1)
    alice, bob = s.actor("alice", server), s.actor("bob", server)
    before = [read_newest_html(s, alice, "the row as seeded, version 1"),
              read_newest(s, alice, "the row as seeded, version 1")]
    row_id, version = before[1].get("id"), before[1].get("version")
    if row_id is None:
        return {"before": before, "ack": {"status": 0}, "after": [], "database": {}}
    ack = edit_label(s, alice, row_id, NEW_LABEL, version, "200 with version 2, committed")
    want = f"version {ack.get('version')}, label {NEW_LABEL!r}"
    after = [read_newest_html(s, bob, want), read_newest(s, bob, want)]
    s.screenshot(server, "after-edit", "the list page right after alice's edit was acknowledged")
    untouched = [view for view, seen in zip(("the page", "the API"), after) if seen.get("db_conn") == "none"]
    if untouched:
        s.note(f"X-DB-Conn: none on {' and '.join(untouched)}: no database connection was used to answer")
    database = audit_row(s, s.engine(), row_id, want)
    return {"before": before, "ack": ack, "after": after, "database": database}


def judge(observations: dict[str, Any]) -> Judgement:
    ack, before, after, database = observations["ack"], observations["before"], observations["after"], observations["database"]
    if any(seen["status"] != 200 for seen in before) or ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the setup failed: reads {[b['status'] for b in before]}, edit HTTP {ack['status']}")
    if database["version"] < ack["version"]:
        return Judgement(LOST, f"the edit was acknowledged as version {ack['version']}, but the database has "
                               f"version {database['version']}")
    workers = {seen["served_by"].split("/")[0] for seen in before + after}
    if len(workers) != 1:  # one sync worker: anything else means the server was not what we asked for
        return Judgement(INCONCLUSIVE, f"the reads were served by {sorted(workers)}, expected one worker")
    failed = [seen for seen in after if seen["status"] != 200]
    if failed:
        return Judgement(CRASH, f"a read after the edit failed with HTTP {failed[0]['status']}")
    views = ("the HTML page", "the API")
    stale = [(view, seen) for view, seen in zip(views, after) if seen["version"] < ack["version"]]
    if stale:
        names = " and ".join(view for view, _ in stale)
        seen = stale[0][1]
        untouched = all(seen.get("db_conn") == "none" for _, seen in stale)
        where = ("answered without a database connection (X-DB-Conn: none): from the HTTP view cache"
                 if untouched else "from a cached response")
        return Judgement(STALE, f"bob saw version {seen['version']} on {names} after version {ack['version']} was "
                                f"acknowledged and committed (the database has version {database['version']}), "
                                f"{where}")
    return Judgement(FRESH, f"bob saw version {ack['version']} on the HTML page and the API right after the edit")
