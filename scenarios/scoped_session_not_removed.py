"""scoped_session_not_removed: a worker thread keeps one transaction open across requests.

Served like production: gunicorn, 1 worker, gthread with 2 threads (T1, T2). Both threads
are held busy, then all but the one a step needs, so each step lands where it must: the
reader reads on T1; the writer edits on T2 (committed); the reader reads again on T1; the
auditor looks at T1's server connection and reads the row from the database.

Staleness is in the DATABASE: T1's session was never removed, so the transaction begun by
its first read is still open (the transaction log shows the reader's BEGIN and no end;
X-DB-Conn the same connection pinned to T1), and SQLite (WAL snapshot) and MariaDB (InnoDB
REPEATABLE READ snapshot) answer the second read from the first snapshot: STALE. Nothing
holds the ORM objects between requests (the identity map is weak), so the ORM adds nothing.

PostgreSQL, honestly: READ COMMITTED takes a new snapshot per statement, so the second read
is fresh (measured on every run). The bug is still there: T1's connection sits "idle in
transaction" in pg_stat_activity. The app sets idle_in_transaction_session_timeout (30 s; the scenario serves it with 5 s),
so the scenario waits (polling pg_stat_activity, bounded) until the server ends that
connection, then reads on T1 twice: the session was never rolled back, so both fail (the
server's termination, then "Can't reconnect until invalid transaction is rolled back"):
CRASH. The wait costs the PostgreSQL broken cell the timeout it serves the app with. In the fixed app T1's
connection is plain "idle" (no transaction), so nothing is waited for and both reads pass.
"""

from __future__ import annotations

from typing import Any

from lab.harness.probes import (SHORT_IDLE_TIMEOUT_ENV, connection_state, outlive_idle_timeout, read_on, served_where_steered, short_error,
                                transaction_events)
from lab.harness.scenario import Cause, Scenario
from lab.harness.steering import Steering
from lab.harness.steps import audit_row, edit_label
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, STALE, Judgement

CAUSE = Cause("scoped_session_not_removed",
              "a page under threaded gunicorn keeps showing a row as its thread first read it")

NEW_LABEL = "checked by writer"


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=1, threads=2, env=SHORT_IDLE_TIMEOUT_ENV)
    reader, writer = s.actor("reader", server), s.actor("writer", server)
    auditor = s.engine()
    steer = Steering(s, server, slots=2, name="thread")
    t1, t2 = steer.slots
    first = read_on(s, steer, t1, reader, "the row as seeded, version 1 (T1's session begins a transaction)")
    steer.only(t2)
    ack = edit_label(s, writer, first["id"], NEW_LABEL, first["version"], "200 with version 2, committed")
    second = read_on(s, steer, t1, reader, f"version {ack.get('version')}, label {NEW_LABEL!r}")
    observations: dict[str, Any] = {"threads": {"t1": t1, "t2": t2}, "first": first, "ack": ack, "second": second}

    state = connection_state(auditor, second["db_conn"])
    observations["t1_connection"] = state
    if state["known"]:
        s.step("auditor", f"look up T1's server connection {second['db_conn']}",
               "no transaction open between requests", state["state"])
    if s.backend == "postgresql":
        waited = outlive_idle_timeout(s, steer, auditor, second["db_conn"], state)
        reads = [read_on(s, steer, t1, reader, "the row at version 2") for _ in range(2)]
        observations["after_timeout"] = {"waited_seconds": waited, "reads": reads}
    steer.release_all()
    observations["database"] = audit_row(s, auditor, first["id"], f"version {ack.get('version')}")
    observations["reader_transactions"] = [e["event"] for e in transaction_events(s, "reader")]
    return observations


def judge(observations: dict[str, Any]) -> Judgement:
    first, ack, second = observations["first"], observations["ack"], observations["second"]
    t1, t2 = observations["threads"]["t1"], observations["threads"]["t2"]
    if ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the edit was not acknowledged (HTTP {ack['status']})")
    if first.get("version") != ack["version"] - 1:
        return Judgement(INCONCLUSIVE, f"the first read saw version {first.get('version')}, not the one edited")
    late = observations.get("after_timeout", {}).get("reads", [])
    if not all(served_where_steered(r) for r in [first, second, *late]) or ack["served_by"] != t2:
        return Judgement(INCONCLUSIVE, f"steering failed: the reads were not all on T1 ({t1}) or the edit not on T2 ({t2})")
    events = observations["reader_transactions"]
    begins, ends = events.count("BEGIN"), sum(1 for e in events if e in ("COMMIT", "ROLLBACK"))
    if second["status"] == 200 and second["version"] < ack["version"]:
        return Judgement(STALE, f"the reader on thread {t1} saw version {second['version']} after version "
                                f"{ack['version']} was acknowledged: its first transaction was never ended "
                                f"({begins} BEGIN, {ends} COMMIT/ROLLBACK) and kept its snapshot", "database")
    failed = [r for r in [second, *late] if r["status"] >= 500]
    if failed:
        errors = "; then ".join(dict.fromkeys(short_error(r["logged_error"]) or f"HTTP {r['status']}" for r in failed))
        if second in failed:
            return Judgement(CRASH, f"the reader's second read on thread {t1} failed ({errors})")
        waited = observations["after_timeout"]["waited_seconds"]
        return Judgement(CRASH, f"thread {t1} left its transaction idle on connection {second['db_conn']}; the "
                                f"server ended it after {waited} s and {len(failed)} of {len(late)} later reads on "
                                f"that thread failed ({errors})")
    stale = [r for r in late if r["version"] < ack["version"]]
    if stale:
        return Judgement(STALE, f"the reader on thread {t1} saw version {stale[0]['version']} after version "
                                f"{ack['version']} was acknowledged", "database")
    return Judgement(FRESH, f"the reader on thread {t1} saw version {second['version']} after the edit; "
                            f"its transactions ended ({begins} BEGIN, {ends} COMMIT/ROLLBACK)")
