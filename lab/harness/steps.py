"""Steps that many scenarios share: read the row under test, edit its label, audit the database."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

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
        if "job" in body:  # the background job the edit sent (lab.jobs), when a broker is set
            ack["job"] = body["job"]
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


MIGRATION_LOCK_TIMEOUT_SECONDS = 1


def migration_probe(s: Scenario, engine: Engine, expected: str) -> dict[str, Any]:
    """Could a schema migration take the transactions table now? Tries `ALTER TABLE ... ADD
    COLUMN` with a 1 s lock timeout, then undoes it, so the schema is unchanged either way.

    A transaction left open (even one that only read) holds a lock on the table that ALTER
    TABLE must wait for on PostgreSQL (ACCESS SHARE) and MariaDB (a metadata lock); SQLite in
    WAL lets a writer in beside an old reader.
    """
    backend, started = engine.dialect.name, time.monotonic()
    add = "ALTER TABLE transactions ADD COLUMN lab_probe INTEGER"
    error: str | None = None
    try:
        with engine.connect() as connection:
            if backend == "postgresql":
                connection.exec_driver_sql(f"SET LOCAL lock_timeout = '{MIGRATION_LOCK_TIMEOUT_SECONDS}s'")
            elif backend != "sqlite":  # MariaDB: DDL commits at once, so it is undone by a second ALTER
                connection.exec_driver_sql(f"SET SESSION lock_wait_timeout = {MIGRATION_LOCK_TIMEOUT_SECONDS}")
            connection.exec_driver_sql(add)
            if backend in ("postgresql", "sqlite"):
                connection.rollback()  # transactional DDL: rolled back, nothing changed
            else:
                connection.exec_driver_sql("ALTER TABLE transactions DROP COLUMN lab_probe")
    except DBAPIError as failure:
        error = f"{type(failure.orig).__name__}: {str(failure.orig).strip().splitlines()[0]}"
    seconds = round(time.monotonic() - started, 2)
    observed = f"blocked after {seconds} s: {error}" if error else f"took the table at once ({seconds} s), undone"
    s.step("migrator", f"{add} (lock timeout {MIGRATION_LOCK_TIMEOUT_SECONDS} s), then undo it", expected, observed)
    return {"blocked": error is not None, "error": error, "seconds": seconds}


def server_transaction(s: Scenario, engine: Engine, conn_id: str, expected: str) -> dict[str, Any]:
    """Is connection `conn_id` inside a transaction right now, and since when? PostgreSQL says
    so live (pg_stat_activity). MariaDB's INNODB_TRX is a cache refreshed at most every 0.1 s
    and not at all while anyone keeps reading it, and SQLite has no view of other connections:
    there, the transaction log and a lock probe (`migration_probe`) tell instead."""
    seen: dict[str, Any] = {"conn": conn_id, "in_transaction": None}
    if engine.dialect.name == "postgresql" and conn_id.isdigit():
        with engine.connect() as connection:
            row = connection.execute(text(
                "SELECT state, extract(epoch FROM now() - xact_start) FROM pg_stat_activity WHERE pid = :pid"
            ), {"pid": int(conn_id)}).one_or_none()
        if row is None:
            seen.update(in_transaction=False, detail="no such backend")
        elif row[1] is None:
            seen.update(in_transaction=False, detail=f"state {row[0]!r}, no transaction")
        else:
            seen.update(in_transaction=True, detail=f"state {row[0]!r}, transaction open for {float(row[1]):.2f} s")
        action = f"SELECT state, xact_start FROM pg_stat_activity WHERE pid = {conn_id}"
    else:
        seen["detail"] = "no reliable live view on this backend: see the transaction log"
        action = f"server view of connection {conn_id}"
    s.step("auditor", action, expected, seen["detail"])
    return seen
