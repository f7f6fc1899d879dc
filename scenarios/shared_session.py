"""shared_session: one Session made at import serves every request and thread of a process.

Two observations of the one bug, each on its own gunicorn server:

A. Stale reads (two sync workers W1, W2; every step steered by holding the other worker):
   bob reads the newest row on W1; alice edits its label on W2 (200, committed); bob reads
   again on W1; the auditor looks at W1's server connection. W1's Session is never closed and
   a read never commits, so bob's first read began a transaction that is still open at his
   second read (the transaction log shows BEGIN and no end). SQLite (WAL snapshot) and MariaDB
   (REPEATABLE READ) answer from the snapshot of the first read: version 1 after version 2 was
   acknowledged. That staleness is in the DATABASE snapshot the shared Session pins, not in
   the ORM: the identity map holds objects weakly and nothing in a request keeps a row alive
   after its response, so the row is loaded again (measured: the identity map is empty between
   requests). PostgreSQL's READ COMMITTED takes a new snapshot per statement, so there bob's
   second read is fresh, while his connection sits "idle in transaction".

B. Crashes (one gthread worker with 8 threads, so all threads share the one Session): a burst
   of 300 requests, 16 in flight at a time, every other one a label edit. Threads run statements,
   commits and rollbacks of one Session and one driver connection at the same time. Measured
   on every backend: many 500s ("This session is provisioning a new connection; concurrent
   operations are not permitted", IllegalStateChangeError, ResourceClosedError; on MariaDB
   also "Packet sequence number wrong", and the worker killed by SIGSEGV or SIGBUS while
   PyMySQL threads read one socket - gunicorn starts a new one). Reads alone do not crash
   SQLite or PostgreSQL: their drivers lock the connection, and a read never ends the shared
   transaction. PyMySQL has no such lock and breaks for good even on reads. So the burst mixes
   in edits, whose commits and rollbacks end the shared transaction under the other threads.
   The overlap is not hoped for but checked: the result counts the threads that answered and
   the pairs of requests in flight at once on different threads; without them the run is
   INCONCLUSIVE.

Verdict: CRASH when any request of the burst failed; else STALE when A saw an old version;
else FRESH. The proof names both observations. B is deterministic in practice: in 11 broken
runs per backend, 88-136 of the 300 requests failed on SQLite, 233-277 on PostgreSQL and
295-298 on MariaDB (with one edit in four instead of one in two, SQLite once fell to 8 of 200:
the edits' commits and rollbacks are what break SQLite and PostgreSQL, so they are half the
burst). The fixed app has one session per request: no failure in the burst (0 of 300 in every
run) and a fresh read in A.
"""

from __future__ import annotations

import http.client
import json
from pathlib import Path
from typing import Any

from lab.harness.concurrency import log_offset, logged_failures, mixed_burst
from lab.harness.probes import connection_state, transaction_events
from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.steering import Steering
from lab.harness.steps import audit_row, edit_label, read_newest
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, LOST, STALE, Judgement

CAUSE = Cause("shared_session", "one Session for every request: old rows from its open transaction, crashes under threads")

NEW_LABEL = "checked by alice"
THREADS, BURST_REQUESTS, BURST_PARALLEL, EDIT_EVERY = 8, 300, 16, 2


def run(s: Scenario) -> dict[str, Any]:
    observations = _stale_read(s)
    observations["burst"] = _burst(s)
    observations["database"] = audit_row(s, s.engine(), observations["first"]["id"], "the last acknowledged version")
    return observations


def _stale_read(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=2)
    alice, bob = s.actor("alice", server), s.actor("bob", server)
    steer = Steering(s, server, slots=2, name="worker")
    w1, w2 = steer.slots
    steer.only(w1)
    first = read_newest(s, bob, "the row as seeded, version 1 (W1's Session begins a transaction)")
    steer.only(w2)
    ack = edit_label(s, alice, first["id"], NEW_LABEL, first["version"], "200 with version 2, committed")
    steer.only(w1)
    second = read_newest(s, bob, f"version {ack.get('version')}, label {NEW_LABEL!r}")
    state = connection_state(s.engine(), second["db_conn"])
    if state["known"]:
        s.step("auditor", f"look up W1's server connection {second['db_conn']}",
               "no transaction open between requests", state["state"])
    steer.release_all()
    server.stop()  # its open transactions end with it; part B gets a server of its own
    bob_events = [e["event"] for e in transaction_events(s, "bob")]
    return {"workers": {"w1": w1, "w2": w2}, "first": first, "ack": ack, "second": second,
            "w1_connection": state, "bob_transactions": bob_events}


def _burst(s: Scenario) -> dict[str, Any]:
    # Its own transaction log: hundreds of events, summarised in the step instead of listed.
    txlog = s.workdir / "burst-txlog.jsonl"
    server = s.serve(workers=1, threads=THREADS, env={"LAB_TXLOG": str(txlog)})
    crowd = s.actor("crowd", server)
    start = read_newest(s, crowd, "the row at its current version")
    if start["status"] != 200:
        return {"start": start}
    offset = log_offset(server)
    result = mixed_burst(crowd, start["id"], start["version"], BURST_REQUESTS, BURST_PARALLEL, EDIT_EVERY)
    result.update(logged_failures(server, offset))
    result["transactions"] = _summary(txlog)
    s.step("crowd", f"{BURST_REQUESTS} requests, {BURST_PARALLEL} at a time, {result['edits']} of them label edits "
                    f"(saw version {start['version']}), on 1 worker x {THREADS} threads",
           "no 5xx: reads 200, one edit 200, the other edits 409",
           f"{result['statuses']}; answered by {len(result['threads'])} threads, "
           f"{result['overlapping_pairs']} overlapping pairs on different threads")
    tx = result["transactions"]
    s.note(f"transaction log: {tx['events']} from {tx['threads']} threads on {tx['connections']} "
           f"database connection(s)")
    if result["exceptions"] or result["workers_killed"]:
        top = ", ".join(f"{name} x{count}" for name, count in list(result["exceptions"].items())[:4])
        s.note(f"app log: {top}" + (f"; workers killed by {', '.join(result['workers_killed'])}"
                                    if result["workers_killed"] else ""))
    result["start"], result["server_threads"] = start, THREADS
    result["after"] = [_read_after(s, crowd) for _ in range(3)]
    return result


def _read_after(s: Scenario, crowd: Actor) -> int | str:
    """One read once the burst is over: its HTTP status, or how the connection failed."""
    try:
        return int(read_newest(s, crowd, "the row (the burst is over)")["status"])
    except (OSError, http.client.HTTPException) as error:  # the worker died under the request
        s.step(crowd.name, "GET /api/transactions?limit=1", "the row (the burst is over)", type(error).__name__)
        return type(error).__name__


def _summary(txlog: Path) -> dict[str, Any]:
    """BEGIN/COMMIT/ROLLBACK counts, and how many threads and server connections they came from."""
    events = [json.loads(line) for line in txlog.read_text(encoding="utf-8").splitlines() if line.strip()] \
        if txlog.exists() else []
    counts: dict[str, int] = {}
    for event in events:
        counts[event["event"]] = counts.get(event["event"], 0) + 1
    return {"events": counts, "threads": len({(e["pid"], e["thread"]) for e in events}),
            "connections": len({e["conn"] for e in events})}


def judge(observations: dict[str, Any]) -> Judgement:
    first, ack, second, burst = observations["first"], observations["ack"], observations["second"], observations["burst"]
    w1, w2 = observations["workers"]["w1"], observations["workers"]["w2"]
    if first["status"] != 200 or ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"part A's setup failed: read HTTP {first['status']}, edit HTTP {ack['status']}")
    if first["served_by"] != w1 or second["served_by"] != w1 or ack["served_by"] != w2:
        return Judgement(INCONCLUSIVE, f"steering failed: reads on {first['served_by']} and {second['served_by']}, "
                                       f"edit on {ack['served_by']} (W1 {w1}, W2 {w2})")
    database = observations["database"]
    if database["version"] < ack["version"]:
        return Judgement(LOST, f"the edit was acknowledged as version {ack['version']}, but the database has "
                               f"version {database['version']}")
    if "requests" not in burst:
        return Judgement(INCONCLUSIVE, f"part B's first read failed (HTTP {burst['start']['status']})")
    if len(burst["threads"]) < 2 or burst["overlapping_pairs"] == 0:
        return Judgement(INCONCLUSIVE, f"the burst did not overlap: {len(burst['threads'])} threads answered, "
                                       f"{burst['overlapping_pairs']} overlapping pairs")

    if second["status"] != 200:
        part_a = f"bob's second read on W1 failed (HTTP {second['status']})"
    elif second["version"] < ack["version"]:
        events = observations["bob_transactions"]
        ended = sum(1 for e in events if e in ("COMMIT", "ROLLBACK"))
        part_a = (f"bob on W1 saw version {second['version']} after version {ack['version']} was acknowledged "
                  f"(the snapshot of a transaction W1's Session never ended: BEGIN x{events.count('BEGIN')}, "
                  f"{ended} ended)")
    else:
        state = observations["w1_connection"]
        held = f", while its connection was {state['state']!r}" if state.get("in_transaction") else ""
        part_a = f"bob's second read on W1 saw version {second['version']} (fresh{held})"
    if burst["failed"]:
        logged = ", ".join(list(burst["exceptions"])[:3]) or "no exception logged"
        killed = f"; workers killed by {', '.join(burst['workers_killed'])}" if burst["workers_killed"] else ""
        return Judgement(CRASH, f"{burst['failed']} of {burst['requests']} concurrent requests failed on a worker "
                                f"whose {burst['server_threads']} threads share one Session ({logged}{killed}); "
                                f"also {part_a}")
    if second["status"] == 200 and second["version"] < ack["version"]:
        return Judgement(STALE, f"{part_a}; the concurrent burst had no failure", "database")
    return Judgement(FRESH, f"{part_a}, and none of {burst['requests']} concurrent requests failed "
                            f"({len(burst['threads'])} threads answered, {burst['overlapping_pairs']} overlapping pairs)")
