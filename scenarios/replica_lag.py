"""replica_lag: the page reads from a streaming replica that has not replayed the user's edit yet.

On the two servers: the app runs under gunicorn (2 sync workers) with the scenario's private
database on the primary and the same database on the lab's replica of it (`make services`:
PostgreSQL's hot standby, `recovery_min_apply_delay` = 1 s; MariaDB's GTID replica,
`MASTER_DELAY` = 1 s) as its replica (LAB_REPLICA_URL). Before anything, the scenario waits,
bounded and by log position, until the replica has applied the seeded database. One worker is held busy, so that all of alice's requests are served by the other
(the doctor's memory of a commit is per process; the fixed app's read-your-writes does not
depend on it: the position travels with the client, in a cookie).

Steps: alice reads the newest row (from the replica), edits its label (200, committed on the
primary; the scenario reads the primary's write position right after the acknowledgement),
and reads the page again at once, carrying the cookies her edit set as a browser does; the
auditor reads the row on the primary. Each read's `X-DB-Read` header says where it ran and,
for a wait, how long (the lag, measured); its server connection (X-DB-Conn) is looked up on
the replica as evidence. The replica cannot have applied a commit made milliseconds earlier:
it applies each one a fixed second after the primary. Staleness is in the database: a replica
behind its primary, read in a fresh transaction with an empty identity map.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import create_engine

from lab import databases, replica
from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.steps import NEWEST, audit_row, describe, seen_row
from lab.harness.verdicts import FRESH, IN_DATABASE, INCONCLUSIVE, LOST, STALE, Judgement

CAUSE = Cause("replica_lag", "an edit is acknowledged, yet the page read right after it shows the old label (a lagging replica)")

NEW_LABEL = "checked by alice"
SETTLE_SECONDS = 15.0  # the replica applies the seeded database about 1 s after it is made


def _read(s: Scenario, actor: Actor, expected: str) -> dict[str, Any]:
    reply = actor.get("/api/transactions", **NEWEST)
    seen = seen_row(reply)
    seen["read_from"] = reply.headers.get("x-db-read", "")
    s.step(actor.name, "GET /api/transactions?limit=1", expected,
           f"{describe(seen)}; X-DB-Read: {seen['read_from'] or '(none)'}", reply)
    return seen


def _edit(s: Scenario, actor: Actor, tx_id: int, version: int, expected: str) -> dict[str, Any]:
    reply = actor.post_json(f"/api/transactions/{tx_id}/label", {"label": NEW_LABEL, "version": version})
    ack: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "received_at": reply.received_at,
                           "cookie": reply.headers.get("set-cookie", "").split(";", 1)[0]}
    observed = f"HTTP {reply.status}: {reply.text[:160]}"
    if reply.status == 200:
        body = reply.json()
        ack.update(version=body["version"], label=body["label"])
        observed = (f"200: acknowledged version {body['version']}, label {body['label']!r}; "
                    f"Set-Cookie: {ack['cookie'] or '(none)'}")
    s.step(actor.name, f"POST /api/transactions/{tx_id}/label {NEW_LABEL!r} (saw version {version})", expected, observed, reply)
    if ack["cookie"]:
        actor.headers["Cookie"] = ack["cookie"]  # what her browser sends with the next request
    return ack


def _on_standby(standby_url: str, conn_id: str) -> bool:
    """Is the server connection that answered a read one of the replica's, on this database?"""
    engine = create_engine(standby_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            return replica.serves_connection(connection, conn_id, engine.url.database or "")
    finally:
        engine.dispose()


def run(s: Scenario) -> dict[str, Any]:
    standby_url = replica.replica_url(s.db_url)
    watcher = create_engine(replica.replica_url(databases.server_url(s.backend).render_as_string(hide_password=False)),
                            isolation_level="AUTOCOMMIT")
    primary = s.engine(isolation_level="AUTOCOMMIT")
    try:
        with primary.connect() as on_primary, watcher.connect() as on_standby:
            seeded = replica.primary_position(on_primary)
            settled = replica.wait_for_replay(on_standby, seeded, SETTLE_SECONDS)
            delay = replica.apply_delay(on_standby)
    finally:
        watcher.dispose()
    s.note(f"the replica (applies the primary {delay} late) has applied the seeded database, position {seeded}, "
           f"{settled:.3f} s after the seed")
    server = s.serve(workers=2, env={"LAB_REPLICA_URL": standby_url})
    other = s.hold(server, "other-worker")
    s.note(f"worker {other.served_by} is held busy: alice's requests are served by the other one")
    alice = s.actor("alice", server)
    before = _read(s, alice, "the row as seeded, version 1, read from the replica")
    if before["status"] != 200:
        return {"before": before, "ack": {"status": 0}, "after": {}, "database": {}, "delay": delay}
    ack = _edit(s, alice, before["id"], before["version"], "200 with version 2, committed on the primary")
    with primary.connect() as on_primary:
        ack["position"] = replica.primary_position(on_primary)  # at or past the edit's commit record
    s.note(f"right after the acknowledgement the primary's write position is {ack['position']}")
    want = f"version {ack.get('version')}, label {NEW_LABEL!r}"
    after = _read(s, alice, want)
    after["after_ack_ms"] = round((after["sent_at"] - ack["received_at"]) * 1000, 1)
    after["on_standby"] = _on_standby(standby_url, after["db_conn"])
    s.note(f"alice's read was sent {after['after_ack_ms']} ms after the acknowledgement; its server connection "
           f"{after['db_conn']} is {'one of the replica' if after['on_standby'] else 'not one of the replica'}'s")
    other.release()
    database = audit_row(s, primary, before["id"], want)
    return {"before": before, "ack": ack, "after": after, "database": database, "delay": delay,
            "settled_seconds": round(settled, 3), "observed_at": time.time()}


def _replayed(read_from: str) -> str:
    """The position in an `X-DB-Read: replica; replayed <lsn>[; waited <s> s]` header."""
    parts = [part.strip() for part in read_from.split(";")]
    return next((part.removeprefix("replayed ") for part in parts if part.startswith("replayed ")), "?")


def judge(observations: dict[str, Any]) -> Judgement:
    before, ack, after, database = (observations["before"], observations["ack"], observations["after"],
                                    observations["database"])
    if before["status"] != 200 or ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the setup failed: read HTTP {before['status']}, edit HTTP {ack['status']}")
    if not before["read_from"].startswith("replica"):
        return Judgement(INCONCLUSIVE, f"the first read did not run on the replica (X-DB-Read: {before['read_from']!r})")
    if database["version"] < ack["version"]:
        return Judgement(LOST, f"the edit was acknowledged as version {ack['version']}, but the primary has "
                               f"version {database['version']}")
    if after["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the read after the edit failed with HTTP {after['status']}")
    if after["served_by"].split("/")[0] != ack["served_by"].split("/")[0]:
        return Judgement(INCONCLUSIVE, f"the edit ({ack['served_by']}) and the read ({after['served_by']}) were "
                                       f"served by different workers; steering failed")
    if after["version"] < ack["version"]:
        if not (after["read_from"].startswith("replica") and after["on_standby"]):
            return Judgement(INCONCLUSIVE, f"alice saw version {after['version']} after version {ack['version']}, "
                                           f"but not from the replica (X-DB-Read: {after['read_from']!r})")
        return Judgement(STALE, f"alice saw version {after['version']} {after['after_ack_ms']} ms after version "
                                f"{ack['version']} was acknowledged: read from the replica, which had replayed up to "
                                f"{_replayed(after['read_from'])}, not the commit's {ack['position']} (the primary has "
                                f"version {database['version']})", IN_DATABASE)
    if after["read_from"].startswith("primary"):
        return Judgement(FRESH, f"alice saw version {ack['version']} right after the edit, read from the primary "
                                f"({after['read_from']})")
    waited = after["read_from"].rsplit("waited ", 1)[-1] if "waited " in after["read_from"] else "no time"
    return Judgement(FRESH, f"alice saw version {ack['version']} right after the edit: read from the replica after "
                            f"waiting {waited} until it had replayed the commit's position "
                            f"{_replayed(after['read_from'])}")
