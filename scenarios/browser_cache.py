"""browser_cache: the browser's HTTP cache answers the page's fetch() of the rows, so an
acknowledged, committed edit stays unseen after a reload and after a new visit.

Served by gunicorn (one sync worker) with its access log on, so the server's own account says
which requests reached it. alice opens the live page (/transactions/live, whose script fetches
its rows from /api/transactions) in a real headless Chromium (Debian's, a fresh profile per
run, stopped always) and reads the newest row's label from the DOM; bob relabels that row
through the API (200, committed); alice presses reload, then opens the page again by its URL;
the auditor reads the row from the database.

Staleness is in NEITHER the ORM nor the database: the edit is committed (the auditor sees it),
and the server never ran a query for alice's rows after it: the access log has no GET of
/api/transactions for either load, and Chromium's performance log says the response came from
its disk cache (fromDiskCache). It is in the browser's HTTP cache, so it is the same whichever
database is behind the app; the judgement's staleness field says "none", the proof says where.
Deterministic: the broken JSON carries an explicit max-age of 300 s (no heuristic freshness),
the fixed JSON `no-cache` with no validator, and each run starts from an empty profile.
"""

from __future__ import annotations

from typing import Any

from lab.harness.browser import Browser
from lab.harness.scenario import Cause, Scenario
from lab.harness.steps import audit_row, edit_label
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, LOST, STALE, Judgement

CAUSE = Cause("browser_cache", "an edit is acknowledged and committed, but a reload of the page shows the old label "
                               "(the browser reused its cached JSON)")

NEW_LABEL = "checked by bob"
LIVE = "/transactions/live?limit=1"  # the newest row only: the row under test
API = "/api/transactions?limit=1"


def _api_requests(log_text: str) -> int:
    """How many GETs of the rows' JSON the server's access log records."""
    return sum(1 for line in log_text.splitlines() if f'"GET {API} ' in line)


def _load(s: Scenario, browser: Browser, server: Any, how: str, expected: str) -> dict[str, Any]:
    """One load of the live page in alice's browser: the row drawn, Chromium's and the server's account."""
    before = _api_requests(server.log_path.read_text(errors="replace"))
    try:
        rows = browser.reload() if how == "reload" else browser.open(f"http://127.0.0.1:{server.port}{LIVE}")
        error = ""
    except Exception as exc:  # a page that did not draw its rows is an observation, not a crash of the run
        rows, error = [], f"{type(exc).__name__}: {exc}"[:300]
    fetches = browser.network("/api/transactions")
    reached = _api_requests(server.log_path.read_text(errors="replace")) - before
    seen: dict[str, Any] = {"how": how, "error": error, "fetches": fetches, "server_requests": reached}
    if rows:
        seen.update(id=rows[0]["id"], version=rows[0]["version"], label=rows[0]["label"])
    cached = [f for f in fetches if f["from_cache"]]
    where = (f"the JSON came from Chromium's cache (fromDiskCache {cached[0]['from_disk_cache']}, "
             f"Cache-Control: {cached[0]['cache_control']})" if cached else
             f"the JSON came from the server (HTTP {fetches[0]['status']}, Cache-Control: {fetches[0]['cache_control']})"
             if fetches else "no fetch of the JSON was seen")
    shown = f"version {seen['version']}, label {seen['label']!r}" if rows else f"no row drawn ({error})"
    action = ("presses reload on the live page" if how == "reload"
              else f"opens {LIVE} in headless Chromium" + (" again" if how == "again" else ""))
    s.step("alice", action, expected,
           f"{shown}; {where}; the server's access log has {reached} GET of {API} for it")
    return seen


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=1, env={"GUNICORN_CMD_ARGS": "--access-logfile -"})
    bob = s.actor("bob", server)
    browser = Browser()
    s.on_close(browser.stop)
    browser.start()
    first = _load(s, browser, server, "open", "the row as seeded, version 1")
    if first.get("id") is None:
        return {"first": first, "ack": {"status": 0}, "after": [], "database": {}}
    ack = edit_label(s, bob, first["id"], NEW_LABEL, first["version"], "200 with version 2, committed")
    want = f"version {ack.get('version')}, label {NEW_LABEL!r}"
    after = [_load(s, browser, server, "reload", want), _load(s, browser, server, "again", want)]
    database = audit_row(s, s.engine(), first["id"], want)
    return {"first": first, "ack": ack, "after": after, "database": database}


def judge(observations: dict[str, Any]) -> Judgement:
    first, ack, after, database = (observations["first"], observations["ack"], observations["after"],
                                   observations["database"])
    if first.get("version") is None or ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the setup failed: first load {first.get('error') or 'drew no row'}, "
                                       f"edit HTTP {ack['status']}")
    if database["version"] < ack["version"]:
        return Judgement(LOST, f"the edit was acknowledged as version {ack['version']}, but the database has "
                               f"version {database['version']}")
    failed = [seen for seen in after if seen.get("version") is None]
    if failed:
        return Judgement(CRASH, f"the live page drew no row on the {failed[0]['how']}: {failed[0]['error']}")
    names = {"reload": "after pressing reload", "again": "on opening the page again"}
    stale = [seen for seen in after if seen["version"] < ack["version"]]
    if stale:
        seen = stale[0]
        unasked = all(x["server_requests"] == 0 and any(f["from_cache"] for f in x["fetches"]) for x in stale)
        where = ("Chromium answered the page's fetch() from its HTTP cache (fromDiskCache) and the server's access "
                 "log has no request for it" if unasked else
                 f"the server was asked {sum(x['server_requests'] for x in stale)} time(s) and a cached copy was used")
        return Judgement(STALE, f"alice saw version {seen['version']} {' and '.join(names[x['how']] for x in stale)} "
                                f"after bob's version {ack['version']} was acknowledged and committed (the database "
                                f"has version {database['version']}): {where}")
    asked = all(x["server_requests"] == 1 for x in after)
    return Judgement(FRESH, f"alice saw version {ack['version']} after pressing reload and on opening the page again; "
                            f"{'each load fetched the rows from the server' if asked else 'the rows were current'}")
