"""background_app_context: a queue worker living in one app context reads old rows or holds locks.

Steps: the app serves the web pages (one gunicorn worker) and its queue worker runs as
`flask --app <module> worker`, fed transaction ids on stdin. alice reads the newest row; the
worker job prints it; alice edits its label (200, committed); the auditor reads the row from
the database; the job prints the row again. Then, while the job waits for work: the lab's
transaction log shows the job's BEGIN / ROLLBACK events, PostgreSQL's pg_stat_activity shows
the state of its connection (no other backend has a reliable live view), and a migrator tries
`ALTER TABLE transactions ADD COLUMN` with a 1 s lock timeout (undone at once).

What each backend shows with the broken job (one session and one transaction for the run):
- SQLite (WAL) and MariaDB (REPEATABLE READ): the second job prints the old version: STALE,
  in the database (the snapshot of the first job's read; `populate_existing` faithfully copies
  the old row into the object). On MariaDB the migration is also blocked.
- PostgreSQL (READ COMMITTED): every statement reads the latest committed rows and
  `populate_existing` overwrites the identity map's object, so the job prints fresh rows. The
  bug shows as the job's transaction: "idle in transaction" since the first job, holding
  ACCESS SHARE locks, so the migration fails on its lock timeout: CRASH (an error caused by
  the bug). Left longer, idle_in_transaction_session_timeout (30 s) ends the connection and the
  job's next read fails.
The fixed job opens an app context per job, so between jobs it holds no transaction at all.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

from lab.engine import REPO_ROOT
from lab.harness.scenario import DOCTOR_ENV, Cause, Scenario, doctor_requested
from lab.harness.steps import audit_row, edit_label, migration_probe, read_newest, server_transaction
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, STALE, Judgement

CAUSE = Cause("background_app_context", "a background job keeps printing a row as it was when the job started")

NEW_LABEL = "checked by alice"
ANSWER_TIMEOUT_SECONDS = 20.0


@dataclass
class JobOutput:
    """What the job's step shows in the timeline (served_by/db_conn, like an HTTP reply)."""

    served_by: str
    db_conn: str


class WorkerJob:
    """`flask --app <module> worker` as a subprocess: one id in on stdin, one JSON line out."""

    def __init__(self, s: Scenario) -> None:
        self.log = (s.workdir / "worker-job.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "flask", "--app", s.module, "worker"],
            cwd=REPO_ROOT, env={**os.environ, **s.lab_env, "LAB_MODE": "1"},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, start_new_session=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        # A reader thread, so a job that hangs or dies fails the step after a timeout instead of blocking.
        threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True).start()

    def _read(self, stream: IO[str] | None) -> None:
        for line in stream or ():
            self.lines.put(line)

    def ask(self, tx_id: int) -> dict[str, Any]:
        assert self.process.stdin is not None
        self.process.stdin.write(f"{tx_id}\n")
        self.process.stdin.flush()
        try:
            return dict(json.loads(self.lines.get(timeout=ANSWER_TIMEOUT_SECONDS)))
        except queue.Empty:
            raise TimeoutError(f"the worker job gave no answer within {ANSWER_TIMEOUT_SECONDS} s "
                               f"(exit code {self.process.poll()})") from None

    def stop(self) -> None:
        """End of input ends the job's loop; killed if it does not exit."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=5)
        self.log.close()


def job_events(s: Scenario, pid: int) -> list[dict[str, Any]]:
    """The job's BEGIN / COMMIT / ROLLBACK events so far, from the lab's transaction log."""
    events = [json.loads(line) for line in s.txlog_path.read_text().splitlines() if line.strip()]
    return [e for e in events if e["pid"] == pid]


def job_read(s: Scenario, job: WorkerJob, tx_id: int, expected: str) -> dict[str, Any]:
    row = job.ask(tx_id)
    events = job_events(s, job.process.pid)
    conn = next((e["conn"] for e in reversed(events) if e["event"] == "BEGIN"), "none")
    seen = {"id": row.get("id"), "version": row.get("version"), "label": row.get("label"), "error": row.get("error"),
            "conn": conn}
    if "error" in row:
        observed = f"error: {row['error']}"
    else:
        observed = f"row {row['id']} at version {row['version']}, label {row['label']!r}"
    s.step("job", f"worker job <- {tx_id}", expected, observed, JobOutput(f"{job.process.pid}/job", conn))
    return seen


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=1)
    alice = s.actor("alice", server)
    job = WorkerJob(s)
    try:
        before = read_newest(s, alice, "the row as seeded, version 1")
        first = job_read(s, job, before["id"], "version 1 (the broken job's only transaction begins here)")
        ack = edit_label(s, alice, before["id"], NEW_LABEL, before["version"], "200 with version 2")
        database = audit_row(s, s.engine(), before["id"], f"version {ack.get('version')}, label {NEW_LABEL!r}")
        if doctor_requested():
            # A queue worker waits for its next message; under `make doctor` the wait outlasts the
            # doctor's job threshold (lab: 1 s), for the broken and the fixed job alike.
            time.sleep(float(DOCTOR_ENV["STALE_DOCTOR_JOB_MAX_SECONDS"]) + 0.3)
        second = job_read(s, job, before["id"], f"version {ack.get('version')}, label {NEW_LABEL!r}")
        events = [e["event"] for e in job_events(s, job.process.pid)]
        s.step("auditor", f"transaction log: the job's events (pid {job.process.pid})",
               "BEGIN ROLLBACK for each job", " ".join(events) or "none")
        idle = None
        if s.backend == "postgresql":  # the only backend with a live view of another connection
            idle = server_transaction(s, s.engine(), second["conn"], "no transaction while the job waits for work")
        migration = migration_probe(s, s.engine(), "takes the table at once: nothing holds it between jobs")
    finally:
        job.stop()
    return {"before": before, "first": first, "ack": ack, "database": database, "second": second,
            "job_idle": idle, "migration": migration, "job_events": events}


def judge(observations: dict[str, Any]) -> Judgement:
    first, ack, database, second = (observations[k] for k in ("first", "ack", "database", "second"))
    if first.get("version") is None or second.get("version") is None:
        return Judgement(INCONCLUSIVE, f"the job did not print the row ({first.get('error') or second.get('error')})")
    if ack["status"] != 200 or database["version"] < ack["version"]:
        return Judgement(INCONCLUSIVE, f"the edit was not acknowledged and committed (HTTP {ack['status']}, "
                                       f"database at version {database['version']})")
    events = observations["job_events"]
    still_open = events.count("BEGIN") > events.count("COMMIT") + events.count("ROLLBACK")
    open_since = " (its one transaction, begun at its first job, was still open)" if still_open else ""
    if second["version"] < ack["version"]:
        return Judgement(STALE, f"the worker job printed version {second['version']} of row {second['id']} after "
                                f"version {ack['version']} was acknowledged and committed{open_since}", "database")
    migration = observations["migration"]
    if migration["blocked"] and not still_open:
        return Judgement(INCONCLUSIVE, f"ALTER TABLE was blocked ({migration['error']}), but the job held no "
                                       f"transaction: something else held the table")
    if migration["blocked"]:
        return Judgement(CRASH, f"the job's rows were fresh (version {second['version']}), but its transaction, "
                                f"open since its first job, made ALTER TABLE fail after {migration['seconds']} s "
                                f"({migration['error']})")
    return Judgement(FRESH, f"the job printed version {second['version']} after version {ack['version']} was "
                            f"acknowledged, and held no transaction between jobs")
