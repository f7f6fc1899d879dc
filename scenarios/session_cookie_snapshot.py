"""session_cookie_snapshot: a wallet renamed in the database keeps its old name for a visitor
whose cookie session holds a copy of it.

Served by gunicorn with two sync workers that share one signing key (LAB_SECRET_KEY, as a
deployment sets it), steered so that each step lands on the worker it names. Steps: alice
chooses her wallets on worker 1 (the answer sets her session cookie) and reads them back on
worker 2 (the cookie is accepted there: same key); an admin renames one of them with SQL,
committed, and the auditor reads the new name back from the database; alice reloads with the
same cookie on both workers (the API) and opens the list page (its "My wallets" line); then
she clears her cookies, chooses the same wallets again and reloads.

Staleness is in NEITHER the ORM nor the database: the rename is committed (the auditor sees
it), every request has its own session, and on the broken app the reload runs no statement
at all (X-DB-Conn: none) - the names come from the cookie the browser sends back, a copy the
server made when she chose. Clearing the cookie is what makes the new name appear there.
"""

from __future__ import annotations

import html
import json
import re
import secrets
import zlib
from typing import Any

from itsdangerous import base64_decode
from sqlalchemy import select, text

from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor, Reply
from lab.harness.steering import Steering
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, LOST, STALE, Judgement
from lab.models import Wallet

CAUSE = Cause("session_cookie_snapshot",
              "a wallet renamed in the database keeps its old name until the visitor's cookie is cleared")

CHOSEN = [3, 7]  # alice's wallets (seeded as "Wallet 03" and "Wallet 07")
RENAMED = CHOSEN[0]
NEW_NAME = "Cold storage (renamed by admin)"
COOKIE = "session"  # Flask's default SESSION_COOKIE_NAME


def cookie_payload(value: str) -> Any:
    """What a Flask session cookie holds: its payload is signed, not encrypted, so anyone
    holding the cookie can read it (base64 JSON, zlib-compressed when that is shorter)."""
    compressed, body = value.startswith("."), value.lstrip(".").split(".")[0]
    data = base64_decode(body)
    return json.loads(zlib.decompress(data) if compressed else data)


def _seen(s: Scenario, actor: Actor, reply: Reply, action: str, expected: str) -> dict[str, Any]:
    seen: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "db_conn": reply.db_conn,
                            "set_cookie": "set-cookie" in reply.headers, "sent_cookie": COOKIE in actor.cookies}
    if COOKIE in actor.cookies:
        seen["cookie_holds"] = cookie_payload(actor.cookies[COOKIE]).get("my_wallets")
    if reply.status == 200:
        wallets = reply.json()["wallets"]
        seen["names"] = {str(w["id"]): w["name"] for w in wallets}
        observed = ", ".join(f"{w['id']}: {w['name']!r}" for w in wallets) or "no wallets"
        observed += " (cookie set)" if seen["set_cookie"] else ""
    else:
        seen["error"] = reply.text[:300]
        observed = f"HTTP {reply.status}: {reply.text[:160]}"
    s.step(actor.name, action, expected, observed, reply)
    return seen


def choose(s: Scenario, alice: Actor, expected: str) -> dict[str, Any]:
    sends = "with her cookie" if COOKIE in alice.cookies else "without a cookie"
    reply = alice.request("PUT", "/api/my-wallets", json_body={"wallet_ids": CHOSEN})
    return _seen(s, alice, reply, f"PUT /api/my-wallets {{'wallet_ids': {CHOSEN}}} ({sends})", expected)


def reload(s: Scenario, alice: Actor, expected: str) -> dict[str, Any]:
    sends = "with her cookie" if COOKIE in alice.cookies else "without a cookie"
    return _seen(s, alice, alice.get("/api/my-wallets"), f"GET /api/my-wallets ({sends})", expected)


_PAGE_WALLET = re.compile(r'data-wallet-id="(\d+)">([^<]*)</a>')


def reload_page(s: Scenario, alice: Actor, expected: str) -> dict[str, Any]:
    """GET the list page: its "My wallets" line shows the same names as the API."""
    reply = alice.get("/transactions", limit="1")
    seen: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "db_conn": reply.db_conn}
    if reply.status == 200:
        seen["names"] = {wallet_id: html.unescape(name) for wallet_id, name in _PAGE_WALLET.findall(reply.text)}
        observed = "My wallets: " + (", ".join(f"{i}: {n!r}" for i, n in seen["names"].items()) or "none")
    else:
        seen["error"] = reply.text[:300]
        observed = f"HTTP {reply.status}"
    s.step(alice.name, "GET /transactions?limit=1 (the page, with her cookie)", expected, observed, reply)
    return seen


def run(s: Scenario) -> dict[str, Any]:
    # One key for both workers, from the environment (a key made per process would make each
    # worker refuse the other's cookie, and the session would silently start empty).
    server = s.serve(workers=2, env={"LAB_SECRET_KEY": secrets.token_urlsafe(32)})
    alice = s.actor("alice", server)
    steer = Steering(s, server, slots=2, name="worker")
    w1, w2 = steer.slots
    obs: dict[str, Any] = {"workers": {"w1": w1, "w2": w2}}
    engine = s.engine()
    with engine.connect() as connection:
        obs["seeded_name"] = connection.execute(select(Wallet.name).where(Wallet.id == RENAMED)).scalar_one()
    steer.only(w1)
    obs["chose"] = choose(s, alice, f"200 with the names the database has; the session cookie set (on W1)")
    steer.only(w2)
    obs["first_visit"] = reload(s, alice, f"the same names (on W2: its key verifies W1's cookie)")

    with engine.begin() as connection:  # another writer: an admin's SQL, committed
        renamed = connection.execute(text("UPDATE wallets SET name = :name WHERE id = :id"),
                                     {"name": NEW_NAME, "id": RENAMED}).rowcount
    s.step("admin", f"UPDATE wallets SET name = {NEW_NAME!r} WHERE id = {RENAMED}; COMMIT", "1 row, committed",
           f"{renamed} row(s), committed")
    with engine.connect() as connection:
        obs["database_name"] = connection.execute(select(Wallet.name).where(Wallet.id == RENAMED)).scalar_one()
    s.step("auditor", f"SELECT name FROM wallets WHERE id = {RENAMED} (new connection)", repr(NEW_NAME),
           repr(obs["database_name"]))

    want = f"wallet {RENAMED} named {NEW_NAME!r}"
    obs["reload"] = {}
    for name, worker in (("w1", w1), ("w2", w2)):
        steer.only(worker)
        obs["reload"][name] = reload(s, alice, f"{want} (on {name.upper()}, same cookie)")
    obs["page"] = reload_page(s, alice, f"{want} on the page too (on W2)")
    s.note(f"alice's cookie (signed, not encrypted: anyone holding it can read it) holds my_wallets = "
           f"{json.dumps(obs['reload']['w2'].get('cookie_holds'))}")

    alice.clear_cookies()
    s.note("alice clears her cookies (a new login, another browser)")
    steer.only(w1)
    obs["cleared_choose"] = choose(s, alice, f"{want}, read from the database")
    steer.only(w2)
    obs["cleared_reload"] = reload(s, alice, want)
    steer.release_all()
    return obs


def judge(observations: dict[str, Any]) -> Judgement:
    obs = observations
    workers = obs["workers"]
    placed = [("chose", obs["chose"], "w1"), ("first_visit", obs["first_visit"], "w2"),
              ("reload on W1", obs["reload"]["w1"], "w1"), ("reload on W2", obs["reload"]["w2"], "w2"),
              ("page", obs["page"], "w2"),
              ("choice after clearing", obs["cleared_choose"], "w1"), ("reload after clearing", obs["cleared_reload"], "w2")]
    misplaced = [label for label, seen, worker in placed if seen["served_by"].split("/")[0] != workers[worker].split("/")[0]]
    if misplaced:
        return Judgement(INCONCLUSIVE, f"steering failed: {', '.join(misplaced)} not on the worker it needed")
    if obs["chose"]["status"] != 200 or not obs["chose"]["set_cookie"]:
        return Judgement(INCONCLUSIVE, f"choosing the wallets failed (HTTP {obs['chose']['status']}, "
                                       f"cookie set: {obs['chose']['set_cookie']})")
    first = obs["first_visit"]
    if first["status"] != 200 or first.get("names", {}).get(str(RENAMED)) != obs["seeded_name"]:
        return Judgement(INCONCLUSIVE, f"the visit on the second worker did not show the chosen wallets "
                                       f"({first.get('names') or first.get('error')}): the cookie was not accepted there")
    if obs["database_name"] != NEW_NAME:
        return Judgement(LOST, f"the admin's rename was committed, but the database has {obs['database_name']!r}")
    reads = [obs["reload"]["w1"], obs["reload"]["w2"], obs["page"], obs["cleared_choose"], obs["cleared_reload"]]
    failed = [seen for seen in reads if seen["status"] != 200]
    if failed:
        return Judgement(CRASH, f"a read after the rename failed with HTTP {failed[0]['status']}")
    key = str(RENAMED)
    stale = [name for name in ("w1", "w2") if obs["reload"][name]["names"].get(key) != obs["database_name"]]
    page_stale = obs["page"]["names"].get(key) != obs["database_name"]
    cleared = [seen["names"].get(key) for seen in (obs["cleared_choose"], obs["cleared_reload"])]
    if page_stale and not stale:
        return Judgement(STALE, f"the page showed wallet {key} named {obs['page']['names'].get(key)!r} to alice while "
                                f"the database has {obs['database_name']!r}")
    if stale:
        seen = obs["reload"][stale[0]]["names"][key]
        if any(name != obs["database_name"] for name in cleared):
            return Judgement(INCONCLUSIVE, f"alice saw {seen!r} with her cookie, but also {cleared} after clearing "
                                           f"it: not explained by the cookie alone")
        untouched = all(obs["reload"][n]["db_conn"] == "none" for n in stale)
        held = obs["reload"][stale[0]].get("cookie_holds") or []
        in_cookie = next((w.get("name") for w in held if isinstance(w, dict) and w.get("id") == RENAMED), None)
        where = (f"her cookie holds the name {in_cookie!r}" if in_cookie is not None
                 else "her cookie holds no name, yet the answer did not come from the database")
        return Judgement(STALE, f"alice, sending the cookie she got before the rename, saw wallet {key} named "
                                f"{seen!r} on {' and '.join(n.upper() for n in stale)}"
                                f"{' and on the page' if page_stale else ''} while the database has {obs['database_name']!r}"
                                f"{' (the API answered without a database connection)' if untouched else ''}: {where}; "
                                f"with her cookie cleared she saw {obs['database_name']!r}")
    if any(name != obs["database_name"] for name in cleared):
        return Judgement(STALE, f"with her cookie cleared alice saw wallet {key} named {cleared} while the database has "
                                f"{obs['database_name']!r}")
    held = obs["reload"]["w1"].get("cookie_holds")
    return Judgement(FRESH, f"alice saw wallet {key} named {obs['database_name']!r} on both workers and the page right after the "
                            f"rename, with the same cookie (it holds my_wallets = {json.dumps(held)}), and again "
                            f"after clearing it")
