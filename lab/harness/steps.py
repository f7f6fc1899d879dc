"""Steps that many scenarios share: read the row under test, edit its label, audit the database."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Engine, select

from lab.harness.scenario import Scenario
from lab.harness.server import Actor, Reply
from lab.models import Transaction

NEWEST = {"limit": "1"}  # the row under test: the newest transaction of the seeded data


def read_newest(s: Scenario, actor: Actor, expected: str) -> dict[str, Any]:
    """GET the newest row; record the step; return what was seen (status, version, label, who)."""
    reply = actor.get("/api/transactions", **NEWEST)
    seen = seen_row(reply)
    s.step(actor.name, "GET /api/transactions?limit=1", expected, describe(seen), reply)
    return seen


def edit_label(s: Scenario, actor: Actor, tx_id: int, label: str, version: int, expected: str) -> dict[str, Any]:
    """POST a label edit carrying the version the actor saw; return the acknowledgement."""
    reply = actor.post_json(f"/api/transactions/{tx_id}/label", {"label": label, "version": version})
    ack: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "db_conn": reply.db_conn,
                           "sent_at": reply.sent_at, "received_at": reply.received_at}
    if reply.status == 200:
        body = reply.json()
        ack.update(version=body["version"], label=body["label"])
        observed = f"{reply.status}: acknowledged version {body['version']}, label {body['label']!r}"
    else:
        observed = f"{reply.status}: {reply.text[:160]}"
    s.step(actor.name, f"POST /api/transactions/{tx_id}/label {label!r} (saw version {version})", expected, observed, reply)
    return ack


def seen_row(reply: Reply) -> dict[str, Any]:
    seen: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "db_conn": reply.db_conn,
                            "sent_at": reply.sent_at, "received_at": reply.received_at}
    if reply.status == 200:
        row = reply.json()["items"][0]
        seen.update(id=row["id"], version=row["version"], label=row["label"])
    else:
        seen["error"] = reply.text[:300]
    return seen


def describe(seen: dict[str, Any]) -> str:
    if seen["status"] != 200:
        return f"HTTP {seen['status']}: {seen.get('error', '')[:160]}"
    return f"row {seen['id']} at version {seen['version']}, label {seen['label']!r}"


def audit_row(s: Scenario, engine: Engine, tx_id: int, expected: str) -> dict[str, Any]:
    """Read the row straight from the database, in a transaction of its own (the truth)."""
    with engine.connect() as connection:
        version, label = connection.execute(
            select(Transaction.version, Transaction.label).where(Transaction.id == tx_id)
        ).one()
    s.step("auditor", f"SELECT version, label FROM transactions WHERE id = {tx_id} (new connection)",
           expected, f"version {version}, label {label!r}")
    return {"version": version, "label": label}
