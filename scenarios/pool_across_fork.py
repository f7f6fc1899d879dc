"""pool_across_fork: two gunicorn workers talk to the database over one connection.

Served as `gunicorn --preload --workers 2` (sync workers), the same command line for the
broken and the fixed app. Steps: both workers are held busy, then all but one, so bob's
first read lands on worker W1 and his second on W2; each answer names its server connection
(X-DB-Conn, recorded by lab mode when the connection was opened). Then a burst: 200 reads,
8 at a time, of pages of different sizes; each answer is checked against the rows the
auditor reads straight from the database.

The verdict comes from the connection ids alone (deterministic): in the broken app
create_app() ran create_all() in the gunicorn master, so the pool already held a connection
when the master forked; both workers inherited it and both report the same server
connection, opened by the master (its pid is in the transaction log's create_all BEGIN):
SHARED_CONNECTION. That is a fact about sockets, not about timing: PostgreSQL's backend pid
and MariaDB's CONNECTION_ID are one server session serving two processes.
SQLite counts too: its "connection" is an sqlite3 handle (file descriptor, locks, page
cache) that the master opened and both workers copied across fork(); X-DB-Conn names the
process that opened it (sqlite:<pid>:<handle>), and SQLite's documentation forbids using a
connection in a child process after fork ("How To Corrupt An SQLite Database File", 2.6).
The fixed app opens nothing before the fork, so each worker opens its own: FRESH.

The burst's errors and crossed answers are recorded as information only (they depend on
timing): with one connection, two processes interleave their protocol messages. Measured
here over 5 runs: PostgreSQL 2-4 of 200 failed ("server closed the connection unexpectedly",
"can't change 'autocommit' now", then PendingRollbackError), MariaDB 1 ("Lost connection to
MySQL server during query"), SQLite none (a read-only burst; the documented danger is in
locking and writing), no wrong rows. No staleness is claimed: the harm is failed or wrong
answers, not old ones.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from sqlalchemy.orm import Session

from lab import queries
from lab.harness.probes import (ERROR_LINE, burst, connections_by_process, read_on, served_where_steered, short_error,
                                skip_transaction_events, transaction_events)
from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.steering import Steering
from lab.harness.verdicts import FRESH, INCONCLUSIVE, SHARED_CONNECTION, Judgement

CAUSE = Cause("pool_across_fork", "two gunicorn workers share one database connection: random errors and crossed results")

BURST_REQUESTS, BURST_PARALLEL, BURST_TIMEOUT_SECONDS = 200, 8, 5.0
PAGE_SIZES = (1, 2, 3, 4)


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=2, preload=True)
    master = server.process.pid if server.process else 0
    bob = s.actor("bob", server)
    steer = Steering(s, server, slots=2, name="worker")
    reads = [read_on(s, steer, worker, bob, "the row; this worker's own server connection") for worker in steer.slots]
    steer.release_all()

    with Session(s.engine()) as auditor:
        newest = [row.Transaction.id for row in queries.list_page(auditor, queries.Filters(limit=max(PAGE_SIZES))).rows]
    paths = [f"/api/transactions?limit={PAGE_SIZES[i % len(PAGE_SIZES)]}" for i in range(BURST_REQUESTS)]

    def right_rows(path: str, body: Any) -> bool:
        size = int(path.rsplit("=", 1)[1])
        return [item["id"] for item in body.get("items", [])] == newest[:size]

    log_before = len(server.log_path.read_text(errors="replace"))
    events_before = len(transaction_events(s))
    load = burst(Actor("load", server.port, timeout=BURST_TIMEOUT_SECONDS), paths, BURST_PARALLEL, right_rows)
    logged = ERROR_LINE.findall(server.log_path.read_text(errors="replace")[log_before:])
    # Exceptions in the app's log (a failed request may log two: the route's and lab mode's header hook's).
    load["app_exceptions"] = dict(Counter(short_error(line).split(":")[0] for line in logged
                                          if line.startswith("sqlalchemy.")))
    load["connections"] = connections_by_process(transaction_events(s)[events_before:])
    skip_transaction_events(s)
    shared = {conn: pids for conn, pids in load["connections"].items() if len(pids) > 1}
    s.step("load", f"{BURST_REQUESTS} GETs of pages of 1-4 rows, {BURST_PARALLEL} at a time",
           "every answer 200 with the rows it asked for; each worker on connections of its own",
           f"{load['ok']} right, {load['crossed']} with other rows, {load['errors']} failed "
           f"{load['error_kinds']}, app exceptions {load['app_exceptions']}; connections used by several "
           f"workers: {shared or 'none'}")
    conns = {r["db_conn"] for r in reads}
    opened_by = sorted({e["pid"] for e in transaction_events(s) if e["conn"] in conns})
    return {"master_pid": master, "workers": steer.slots, "reads": reads, "opened_by_pids": opened_by, "load": load}


def judge(observations: dict[str, Any]) -> Judgement:
    reads, load = observations["reads"], observations["load"]
    if not all(served_where_steered(r) for r in reads) or len({r["served_by"] for r in reads}) != 2:
        return Judgement(INCONCLUSIVE, "steering failed: the two reads did not come from two different workers")
    if any(r["status"] != 200 or r["db_conn"] in ("?", "none", "") for r in reads):
        return Judgement(INCONCLUSIVE, "a steered read failed or named no server connection: "
                                       + ", ".join(f"HTTP {r['status']} conn {r['db_conn']}" for r in reads))
    pids = [r["served_by"].split("/")[0] for r in reads]
    under_load = (f"; under load {load['errors']} of {load['requests']} requests failed and {load['crossed']} "
                  f"got wrong rows")
    if reads[0]["db_conn"] == reads[1]["db_conn"]:
        master = observations["master_pid"]
        where = f" (used in the gunicorn master, pid {master}, before the fork)" if master in observations[
            "opened_by_pids"] else ""
        return Judgement(SHARED_CONNECTION, f"workers {pids[0]} and {pids[1]} both used server connection "
                                            f"{reads[0]['db_conn']}{where}{under_load}")
    return Judgement(FRESH, f"worker {pids[0]} used connection {reads[0]['db_conn']}, worker {pids[1]} its own "
                            f"{reads[1]['db_conn']}{under_load}")
