"""identity_map: a note waits for bob's row lock, then is merged into the label bob replaced.

Served by gunicorn with one sync worker. Steps: alice reads the newest row (version 1). bob, a
back-office job on its own connection at READ COMMITTED, changes its label and holds the row
lock (not committed yet). alice appends a note (POST .../note): her request reads the row,
which returns the committed version 1 (bob's change is not committed), then locks it with
SELECT ... FOR UPDATE and waits for bob's lock; the scenario sees her connection waiting on
the server. bob commits (version 2). alice's locking read now gets the lock and, at READ
COMMITTED, the row bob committed. The broken app, without populate_existing, keeps the
attributes its first read loaded: it appends the note to the old label and writes version 2
again, so bob's acknowledged label is LOST. The fixed app overwrites the object from the
locked row and writes version 3, bob's label with the note.

Staleness: in the ORM (the identity map). The database is fresh: the app's SQL log (lab mode's
LAB_SQL_LOG, SQLAlchemy's own engine logger at DEBUG) shows the locking read returning bob's
row, at READ COMMITTED (the transaction log names the level), where even a plain SELECT sees
the latest commit; what is old is the Python object the session already held.
SQLite cells are N/A (scenarios/expected_matrix.json says why).
"""

from __future__ import annotations

import ast
import re
import threading
from pathlib import Path
from typing import Any

from sqlalchemy import text

from lab.harness.probes import transaction_events, wait_for_row_lock_waiter
from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Reply
from lab.harness.steps import audit_row, read_newest
from lab.harness.verdicts import CRASH, FRESH, IN_ORM, INCONCLUSIVE, LOST, Judgement

CAUSE = Cause("identity_map", "a write waits for another writer's row lock, then saves over that writer's edit "
                              "from the object it had loaded before")

BOB_LABEL = "moved by bob"
NOTE = "audited"
LOCK_WAIT_LIMIT_SECONDS = 2.0  # under the servers' 3 s lock timeout (lab/engine.py)


def locking_read_in_sql_log(path: Path) -> dict[str, Any]:
    """What the database answered to the request's SELECT ... FOR UPDATE, from SQLAlchemy's own
    engine log (lab mode's LAB_SQL_LOG): the columns and the row, as the driver returned them."""
    lines = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    starts = [i for i, line in enumerate(lines) if line.rstrip().endswith("FOR UPDATE")]
    if not starts:
        return {"found": False}
    after = lines[starts[-1] + 1:]
    columns = next((line.split(" Col ", 1)[1] for line in after if " Col " in line), "()")
    row = next((line.split(" Row ", 1)[1] for line in after if " Row " in line), "")
    names = ast.literal_eval(columns)  # a tuple of column names: plain strings
    last_int = re.search(r"(\d+)\)$", row)
    version = int(last_int.group(1)) if last_int and names and names[-1] == "version" else None
    return {"found": bool(row), "columns": list(names), "row": row[-160:], "version": version,
            "has_bob_label": repr(BOB_LABEL) in row}


def run(s: Scenario) -> dict[str, Any]:
    sql_log = s.workdir / "sql.log"
    server = s.serve(workers=1, env={"LAB_SQL_LOG": str(sql_log)})
    alice = s.actor("alice", server)
    alice_saw = read_newest(s, alice, "the row as seeded, version 1")
    if alice_saw["status"] != 200:
        return {"alice_saw": alice_saw}
    tx_id = alice_saw["id"]
    bob_engine = s.engine(isolation_level="READ COMMITTED")
    observations: dict[str, Any] = {"alice_saw": alice_saw, "backend": s.backend}
    with bob_engine.connect() as bob:
        bob_conn = str(bob.exec_driver_sql(
            "SELECT pg_backend_pid()" if s.backend == "postgresql" else "SELECT CONNECTION_ID()").scalar_one())
        bob.execute(text("UPDATE transactions SET label = :label, version = version + 1 WHERE id = :id"),
                    {"label": BOB_LABEL, "id": tx_id})
        s.step("bob", f"BEGIN (READ COMMITTED); UPDATE transactions SET label = {BOB_LABEL!r}, version = version + 1 "
                      f"WHERE id = {tx_id}  [db conn {bob_conn}]",
               "the row is locked by bob, version 2 not committed yet", "updated, row lock held, not committed")
        reply: dict[str, Reply] = {}
        request = threading.Thread(target=lambda: reply.update(
            note=alice.post_json(f"/api/transactions/{tx_id}/note", {"note": NOTE})), daemon=True)
        request.start()
        waiters = wait_for_row_lock_waiter(bob_engine, LOCK_WAIT_LIMIT_SECONDS)
        observations["waiters"] = waiters
        s.step("observer", "which connections of this database wait for a row lock?",
               "alice's request: it read the row (version 1, committed) and waits in SELECT ... FOR UPDATE",
               "; ".join(waiters) or f"none within {LOCK_WAIT_LIMIT_SECONDS} s")
        bob.commit()
        s.step("bob", "COMMIT", "version 2 committed; bob's job is told it worked", "committed")
        request.join(timeout=20)
    note = reply.get("note")
    ack: dict[str, Any] = {"status": note.status if note else 0}
    if note is not None:
        ack.update(served_by=note.served_by, db_conn=note.db_conn)
        if note.status == 200:
            body = note.json()
            ack.update(version=body["version"], label=body["label"])
            observed = f"200: acknowledged version {body['version']}, label {body['label']!r}"
        else:
            observed = f"{note.status}: {note.text[:160]}"
    else:
        observed = "no answer within 20 s"
    s.step("alice", f"POST /api/transactions/{tx_id}/note {NOTE!r} (sent before bob's commit, answered after it)",
           f"200 with version 3, label {BOB_LABEL + '; ' + NOTE!r}", observed, note)
    locking = observations["locking_read"] = locking_read_in_sql_log(sql_log)
    s.step("observer", "the app's SQL log (SQLAlchemy's engine logger): the row alice's SELECT ... FOR UPDATE returned",
           f"bob's committed row: version 2, label {BOB_LABEL!r}",
           f"version {locking.get('version')}, {'with' if locking.get('has_bob_label') else 'without'} bob's label: "
           f"...{locking.get('row', '')[-90:]}" if locking["found"] else "no locking read in the log")
    begins = [e for e in transaction_events(s, "alice") if e["event"] == "BEGIN"]
    observations["alice_isolation"] = begins[-1].get("isolation", "the server's default") if begins else None
    observations["ack"] = ack
    observations["database"] = audit_row(s, s.engine(), tx_id,
                                         f"version 3, label {BOB_LABEL + '; ' + NOTE!r}: bob's edit and alice's note")
    return observations


def judge(observations: dict[str, Any]) -> Judgement:
    alice_saw = observations["alice_saw"]
    if alice_saw["status"] != 200 or alice_saw["version"] != 1:
        return Judgement(INCONCLUSIVE, f"alice did not see the seeded row at version 1 (HTTP {alice_saw['status']})")
    ack, database, waiters = observations["ack"], observations["database"], observations["waiters"]
    alice_conn = ack.get("db_conn", "?")
    if not any(waiter.split(":")[0] == alice_conn for waiter in waiters):
        return Judgement(INCONCLUSIVE, f"alice's request (db conn {alice_conn}) was not seen waiting for bob's row lock "
                                       f"(waiting: {waiters or 'none'}), so bob's commit may not have come in between")
    if ack["status"] != 200:
        return Judgement(CRASH, f"alice's note failed with HTTP {ack['status']} after waiting for bob's lock")
    locking = observations["locking_read"]
    if not locking["found"] or not locking["has_bob_label"] or locking["version"] != 2:
        return Judgement(INCONCLUSIVE, f"the SQL log does not show alice's locking read returning bob's row "
                                       f"(version 2, {BOB_LABEL!r}): {locking}")
    isolation = observations["alice_isolation"]
    where = (f"alice's transaction ({isolation}) read the row at version 1, waited for bob's lock in SELECT ... "
             f"FOR UPDATE, and the SQL log shows that read returning bob's committed row (version 2, {BOB_LABEL!r})")
    if BOB_LABEL not in (database["label"] or "") and database["version"] == ack["version"] == 2:
        return Judgement(LOST, f"{where}; yet the session kept the object its first read had loaded: the note was "
                               f"merged into {alice_saw['label']!r} and acknowledged as version {ack['version']}, "
                               f"bob's version, and the database has {database['label']!r}: bob's label is gone. "
                               f"The database answered fresh, the identity map's object was old", staleness=IN_ORM)
    if ack["version"] == database["version"] == 3 and database["label"] == f"{BOB_LABEL}; {NOTE}":
        return Judgement(FRESH, f"{where}; the object took that row, and the note was merged into bob's label and "
                                f"written as version 3: {database['label']!r}")
    return Judgement(INCONCLUSIVE, f"unexpected outcome: alice got version {ack.get('version')} label "
                                   f"{ack.get('label')!r}, the database has version {database['version']} "
                                   f"label {database['label']!r}")
