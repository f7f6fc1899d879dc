"""scoped_session_wrong_scope: a session scoped per user follows that user across requests and threads.

Served like production: gunicorn, 1 worker, gthread with 2 threads (T1, T2); each actor's
requests carry `X-User` as a sign-in proxy would set it. Steps (every thread but the one a
step needs is held busy): alice reads on T1; bob edits the row on T2 (committed); alice reads
again, on T2; bob reads on T1; the auditor looks at alice's server connection and reads the
row from the database.

Staleness is in the DATABASE: in the broken app alice's second read, on another thread, gets
alice's session back with the transaction her first read began on T1 (the same X-DB-Conn and
no new BEGIN in the transaction log: one transaction crossed threads), so SQLite (WAL) and
MariaDB (InnoDB REPEATABLE READ) answer it from her first snapshot: STALE. Bob, whose session
committed his edit, sees it. Nothing holds ORM objects between requests (weak identity map).

PostgreSQL, honestly: READ COMMITTED gives alice fresh rows on every read (measured). Her
session still leaves its connection "idle in transaction"; the app's
idle_in_transaction_session_timeout (30 s; the scenario serves it with 5 s) ends it (the scenario polls pg_stat_activity,
bounded), and then alice's reads fail on either thread because her session was never rolled
back: CRASH, after that timeout on each PostgreSQL broken run. In the fixed app alice's connection is not
in a transaction, so nothing is waited for and her reads pass.
"""

from __future__ import annotations

from typing import Any

from lab.harness.probes import (SHORT_IDLE_TIMEOUT_ENV, connection_state, outlive_idle_timeout, read_on, served_where_steered, short_error,
                                transaction_events)
from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.steering import Steering
from lab.harness.steps import audit_row, edit_label
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, STALE, Judgement

CAUSE = Cause("scoped_session_wrong_scope",
              "one user keeps seeing a row as at their first page view, on every worker thread")

NEW_LABEL = "checked by bob"


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=1, threads=2, env=SHORT_IDLE_TIMEOUT_ENV)
    alice = Actor("alice", server.port, headers={"X-User": "alice"})
    bob = Actor("bob", server.port, headers={"X-User": "bob"})
    auditor = s.engine()
    steer = Steering(s, server, slots=2, name="thread")
    t1, t2 = steer.slots
    first = read_on(s, steer, t1, alice, "the row as seeded, version 1")
    steer.only(t2)
    ack = edit_label(s, bob, first["id"], NEW_LABEL, first["version"], "200 with version 2, committed")
    second = read_on(s, steer, t2, alice, f"version {ack.get('version')} (a new request, on another thread)")
    bobs = read_on(s, steer, t1, bob, f"version {ack.get('version')}")
    observations: dict[str, Any] = {"threads": {"t1": t1, "t2": t2}, "first": first, "ack": ack,
                                    "second": second, "bob_read": bobs}

    state = connection_state(auditor, second["db_conn"])
    observations["alice_connection"] = state
    if state["known"]:
        s.step("auditor", f"look up alice's server connection {second['db_conn']}",
               "no transaction open between requests", state["state"])
    if s.backend == "postgresql":
        waited = outlive_idle_timeout(s, steer, auditor, second["db_conn"], state)
        reads = [read_on(s, steer, slot, alice, "the row at version 2") for slot in (t1, t2)]
        observations["after_timeout"] = {"waited_seconds": waited, "reads": reads}
    steer.release_all()
    observations["database"] = audit_row(s, auditor, first["id"], f"version {ack.get('version')}")
    observations["alice_transactions"] = [e["event"] for e in transaction_events(s, "alice")]
    return observations


def judge(observations: dict[str, Any]) -> Judgement:
    first, ack, second = observations["first"], observations["ack"], observations["second"]
    t1, t2 = observations["threads"]["t1"], observations["threads"]["t2"]
    if ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the edit was not acknowledged (HTTP {ack['status']})")
    if first.get("version") != ack["version"] - 1:
        return Judgement(INCONCLUSIVE, f"alice's first read saw version {first.get('version')}, not the one edited")
    late = observations.get("after_timeout", {}).get("reads", [])
    reads = [first, second, observations["bob_read"], *late]
    if not all(served_where_steered(r) for r in reads) or ack["served_by"] != t2:
        return Judgement(INCONCLUSIVE, f"steering failed: a step did not run on its thread ({t1} or {t2})")
    events = observations["alice_transactions"]
    begins, ends = events.count("BEGIN"), sum(1 for e in events if e in ("COMMIT", "ROLLBACK"))
    one_transaction = begins == 1 and ends == 0 and second["db_conn"] == first["db_conn"]
    carried = (f"carried one transaction (connection {first['db_conn']}, {begins} BEGIN, {ends} COMMIT/ROLLBACK) "
               f"from thread {t1} to thread {t2}" if one_transaction else
               f"left its transactions open ({begins} BEGIN, {ends} COMMIT/ROLLBACK)")
    if second["status"] == 200 and second["version"] < ack["version"]:
        return Judgement(STALE, f"alice saw version {second['version']} on thread {t2} after version {ack['version']} "
                                f"was acknowledged: her session {carried}, with its first snapshot", "database")
    failed = [r for r in [second, *late] if r["status"] >= 500]
    if failed:
        errors = "; then ".join(dict.fromkeys(short_error(r["logged_error"]) or f"HTTP {r['status']}" for r in failed))
        if second in failed:
            return Judgement(CRASH, f"alice's second read, on thread {t2}, failed ({errors})")
        waited = observations["after_timeout"]["waited_seconds"]
        return Judgement(CRASH, f"alice's session {carried}; idle in transaction, it was ended by the server after "
                                f"{waited} s, and {len(failed)} of {len(late)} later reads of alice failed, on "
                                f"threads {t1} and {t2} ({errors})")
    stale = [r for r in late if r["version"] < ack["version"]]
    if stale:
        return Judgement(STALE, f"alice saw version {stale[0]['version']} after version {ack['version']} "
                                f"was acknowledged", "database")
    return Judgement(FRESH, f"alice saw version {second['version']} on thread {t2} after the edit; her transactions "
                            f"ended ({begins} BEGIN, {ends} COMMIT/ROLLBACK)")
