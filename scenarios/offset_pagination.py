"""offset_pagination: numbered pages repeat rows, or skip them, while the list changes.

Steps, twice, each time following the "next page" link the API gave (`next_page` from the
broken app, `next_cursor` from the fixed one):
- arrivals: the auditor notes the newest-first list; alice reads page 1 (5 rows); a writer
  commits 3 new, newer transactions; alice reads page 2.
- labelling: alice works through the unlabelled list: she reads page 1, labels 2 of its rows
  (so they leave the list), then reads page 2.
Page 2 should hold rows 6 to 10 of the list as alice saw it on page 1. With OFFSET, the three
arrivals push page 1's last 3 rows onto page 2 (they repeat), and the 2 labelled rows pull
page 2's first 2 rows onto page 1, which alice has already read (they appear on no page).
Verdict STALE: nothing is old in the ORM or in a database snapshot (every page is a fresh,
short transaction, staleness "none"); the stale thing is the page number, a position in the
list as it was, applied to the list as it is. It is the closest verdict: what alice is shown
as the next page is a view of the list older than the writes she was told had been made.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, insert, select

from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.steps import edit_label
from lab.harness.verdicts import FRESH, INCONCLUSIVE, STALE, Judgement
from lab.models import Transaction
from lab.seed import END

CAUSE = Cause("offset_pagination", "page 2 repeats rows of page 1, or skips rows, while transactions change")

PAGE_SIZE = 5
ARRIVALS = 3
LABELLED = 2


def list_ids(s: Scenario, engine: Engine, unlabelled: bool, expected: str) -> list[int]:
    """The first two pages' worth of the list, newest first, straight from the database."""
    statement = select(Transaction.id).order_by(Transaction.occurred_at.desc(), Transaction.id.desc())
    if unlabelled:
        statement = statement.where(Transaction.label.is_(None))
    with engine.connect() as connection:
        ids = list(connection.scalars(statement.limit(2 * PAGE_SIZE)))
    which = "unlabelled " if unlabelled else ""
    s.step("auditor", f"SELECT the first {2 * PAGE_SIZE} ids of the {which}list, newest first", expected, str(ids))
    return ids


def read_page(s: Scenario, actor: Actor, params: dict[str, str], expected: str) -> dict[str, Any]:
    """GET one page; return its ids, versions and the parameters of the page after it."""
    reply = actor.get("/api/transactions", **params)
    page: dict[str, Any] = {"status": reply.status, "params": params, "served_by": reply.served_by}
    if reply.status == 200:
        body = reply.json()
        page["ids"] = [row["id"] for row in body["items"]]
        page["versions"] = {row["id"]: row["version"] for row in body["items"]}
        # Follow the link the API offers, whichever kind it is.
        if body.get("next_cursor"):
            page["next"] = {**params, "cursor": body["next_cursor"]}
        elif body.get("next_page"):
            page["next"] = {**params, "page": str(body["next_page"])}
        observed = f"ids {page['ids']}"
    else:
        observed = f"HTTP {reply.status}: {reply.text[:160]}"
    query = "&".join(f"{k}={v[:12] + '...' if len(v) > 15 else v}" for k, v in params.items())
    s.step(actor.name, f"GET /api/transactions?{query}", expected, observed, reply)
    return page


def insert_arrivals(s: Scenario, engine: Engine) -> list[int]:
    """The writer commits ARRIVALS incoming transactions, newer than every seeded one."""
    rows = [{"tx_hash": f"0x{n:064x}", "wallet_id": 1, "type": "in", "asset_symbol": "ETH", "amount": Decimal(n),
             "occurred_at": END + dt.timedelta(minutes=n), "label": None, "contact_id": None, "version": 1}
            for n in range(1, ARRIVALS + 1)]
    with engine.begin() as connection:
        connection.execute(insert(Transaction), rows)
        ids = list(connection.scalars(select(Transaction.id).where(Transaction.occurred_at > END)))
    s.step("writer", f"INSERT {ARRIVALS} new transactions, newer than all others; COMMIT", "committed",
           f"ids {sorted(ids)}")
    return sorted(ids)


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=1)
    alice = s.actor("alice", server)
    auditor = s.engine()
    first_page = {"limit": str(PAGE_SIZE)}

    s.note("arrivals: new transactions are committed while alice pages")
    truth = list_ids(s, auditor, False, "the list alice is about to page through")
    page1 = read_page(s, alice, first_page, f"ids {truth[:PAGE_SIZE]}")
    arrived = insert_arrivals(s, auditor)
    page2 = read_page(s, alice, page1.get("next", {}), f"ids {truth[PAGE_SIZE:]}: the rows after page 1")

    s.note("labelling: alice labels rows of page 1 of the unlabelled list, then reads page 2")
    truth_u = list_ids(s, auditor, True, "the unlabelled list alice is about to work through")
    unlabelled_page = {**first_page, "unlabelled": "1"}
    page1_u = read_page(s, alice, unlabelled_page, f"ids {truth_u[:PAGE_SIZE]}")
    acks = [edit_label(s, alice, tx_id, "reviewed", page1_u["versions"][tx_id], "200: it leaves the unlabelled list")
            for tx_id in page1_u.get("ids", [])[:LABELLED]]
    page2_u = read_page(s, alice, page1_u.get("next", {}), f"ids {truth_u[PAGE_SIZE:]}: the rows after page 1")
    return {"arrivals": {"truth": truth, "page1": page1, "inserted": arrived, "page2": page2},
            "labelling": {"truth": truth_u, "page1": page1_u, "labels": acks, "page2": page2_u}}


def skipped_rows(truth: list[int], page1: list[int], page2: list[int]) -> list[int]:
    """Rows after page 1 in the list that page 2 passed over: on neither page, although page 2
    shows a row that comes after them (a row beyond `truth` comes after all of it)."""
    shown = set(page1) | set(page2)
    last = max((truth.index(i) if i in truth else len(truth) for i in page2), default=-1)
    return [i for i in truth[PAGE_SIZE:] if i not in shown and truth.index(i) < last]


def judge(observations: dict[str, Any]) -> Judgement:
    arrivals, labelling = observations["arrivals"], observations["labelling"]
    pages = [arrivals["page1"], arrivals["page2"], labelling["page1"], labelling["page2"]]
    if any(p["status"] != 200 for p in pages):
        return Judgement(INCONCLUSIVE, f"a page read failed (HTTP {[p['status'] for p in pages]})")
    if len(arrivals["inserted"]) != ARRIVALS or any(a["status"] != 200 for a in labelling["labels"]):
        return Judgement(INCONCLUSIVE, "the arrivals or the labels were not all committed")
    for part in (arrivals, labelling):
        if part["page1"]["ids"] != part["truth"][:PAGE_SIZE]:
            return Judgement(INCONCLUSIVE, f"page 1 was not the list's first {PAGE_SIZE} rows; nothing to compare")
    repeated = [i for i in arrivals["page2"]["ids"] if i in arrivals["page1"]["ids"]]
    skipped = skipped_rows(labelling["truth"], labelling["page1"]["ids"], labelling["page2"]["ids"])
    if repeated or skipped:
        parts = []
        if repeated:
            parts.append(f"page 2 repeated {len(repeated)} rows already shown on page 1 (ids {repeated}) after "
                         f"{ARRIVALS} newer transactions were committed")
        if skipped:
            parts.append(f"in the unlabelled list, {len(skipped)} rows (ids {skipped}) were on no page after "
                         f"{LABELLED} rows of page 1 were labelled")
        return Judgement(STALE, "; ".join(parts))
    continued = all(part["page2"]["ids"] == part["truth"][PAGE_SIZE:] for part in (arrivals, labelling))
    if continued:
        return Judgement(FRESH, f"both times page 2 continued right after page 1's last row: no row repeated, "
                                f"none skipped ({ARRIVALS} arrivals, {LABELLED} rows labelled in between)")
    return Judgement(INCONCLUSIVE, f"page 2 was neither the continuation nor a shifted list: "
                                   f"{arrivals['page2']['ids']}, {labelling['page2']['ids']}")
