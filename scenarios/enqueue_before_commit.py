"""enqueue_before_commit: the background job sent for an edit processes the row as it was before it.

Steps: the app (one gunicorn worker) sends a Celery task, the label-changed notice, for every
label edit; a Celery worker (`celery -A lab.celery_worker worker --pool=solo`, on its own
queue) runs it, reading the row in a transaction of its own. The broker is Redis on the
PostgreSQL and MariaDB cells and kombu's SQLAlchemy transport on two SQLite files (no server)
on the SQLite cells. alice reads the newest row, edits its label (200, committed), then reads
the job's outcome from the app (`GET /api/jobs/<id>`); the auditor reads the row.

Steering: lab mode's job gate (`X-Lab-Await-Job: 1`) makes alice's edit wait, bounded, right
after sending the task until the worker has finished it. In the broken app that wait sits
inside the transaction, after its UPDATE and before its commit, so the worker runs while the
edit is uncommitted on every run; in the fixed app it sits after the commit, harmless. The
worker only reads the lab's database: on SQLite (WAL) a reader is not blocked by the request's
write lock, on PostgreSQL and MariaDB a plain SELECT is not blocked by the row lock.
Staleness: in the database: the worker's transaction read the last committed row, and the
edit was not committed yet. Nothing in the ORM is old: the worker's session is new per task.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

from lab import jobs
from lab.engine import REPO_ROOT
from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.steps import audit_row, edit_label, read_newest
from lab.harness.verdicts import FRESH, INCONCLUSIVE, STALE, Judgement

CAUSE = Cause("enqueue_before_commit", "the job sent for an edit processes the old row, though the edit was acknowledged")

NEW_LABEL = "checked by alice"
READY_TIMEOUT_SECONDS = 30.0
JOB_TIMEOUT_SECONDS = 20.0
DEFAULT_TEST_BROKER = "redis://127.0.0.1:6379/7"


def broker_urls(s: Scenario) -> tuple[str, str]:
    """SQLite: two SQLite files in the run's folder (no server). Servers: the lab's Redis,
    which must answer (a missing broker fails the cell, it is never skipped)."""
    if s.backend == "sqlite":
        folder = s.workdir / "jobs"
        folder.mkdir(exist_ok=True)
        return jobs.embedded_urls(folder)
    url = os.environ.get("LAB_TEST_BROKER_URL") or DEFAULT_TEST_BROKER
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=2).ping()
    except redis.RedisError as error:
        raise RuntimeError(f"the broker {url} does not answer ({error}); start it with `make services`") from None
    return url, url


def forget_queue(url: str, queue: str) -> None:
    """Remove this run's queue and kombu's bindings of it from the shared Redis database (results
    expire by themselves after an hour)."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    client.delete(queue, f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}")
    client.close()


class CeleryWorker:
    """`celery -A lab.celery_worker worker --pool=solo -Q <queue>` in a process group of its own."""

    def __init__(self, s: Scenario, env: dict[str, str], queue: str) -> None:
        self.log_path = s.workdir / "celery-worker.log"
        self.log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "lab.celery_worker", "worker", "--pool=solo", "-Q", queue,
             "-n", f"{queue}@127.0.0.1", "--without-gossip", "--without-mingle", "--without-heartbeat",
             "--loglevel=INFO"],
            cwd=REPO_ROOT, env={**os.environ, **env}, stdout=self.log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # warm shutdown
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=5)
        self.log.close()


def launch_worker(s: Scenario, env: dict[str, str], broker: str, backend: str, queue: str) -> tuple[Any, CeleryWorker]:
    """Send a first trivial task, then start the worker (it boots while the app starts too)."""
    client = jobs.make_celery("scenario", broker, backend, queue)
    s.on_close(client.close)
    ping = client.send_task(jobs.PING)  # sent first: the client makes the broker's tables
    ping.state  # and the result store's, before the worker starts
    worker = CeleryWorker(s, env, queue)
    s.on_close(worker.stop)
    return ping, worker


def worker_ready(s: Scenario, ping: Any, worker: CeleryWorker, broker: str, queue: str) -> dict[str, Any]:
    """Wait until the worker has run the first trivial task (no sleep that hopes)."""
    started = time.monotonic()
    try:
        pid = ping.get(timeout=READY_TIMEOUT_SECONDS)
    except Exception as error:
        tail = worker.log_path.read_text(errors="replace")[-600:]
        raise RuntimeError(f"the Celery worker did not answer a ping within {READY_TIMEOUT_SECONDS} s "
                           f"({type(error).__name__}); its log ends: {tail}") from None
    transport = broker.split(":", 1)[0]
    s.step("worker", f"celery worker --pool=solo -Q {queue} (broker {transport})",
           "ready: it runs a first trivial task", f"pid {pid} ran the ping task")
    return {"pid": pid, "transport": transport, "queue": queue, "ready_after_app_seconds": round(time.monotonic() - started, 2)}


def run(s: Scenario) -> dict[str, Any]:
    broker, backend = broker_urls(s)
    queue = f"lab-{os.environ.get('LAB_DB_NAMESPACE', '')}{s.cause.name}-{s.app}-{s.backend}-{uuid.uuid4().hex[:8]}"
    env = {"LAB_BROKER_URL": broker, "LAB_RESULT_BACKEND": backend, "LAB_JOBS_QUEUE": queue}
    if broker.startswith("redis"):
        s.on_close(lambda: forget_queue(broker, queue))  # runs last: after the worker has stopped
    ping, celery_worker = launch_worker(s, {**s.lab_env, **env, "LAB_MODE": "1", "LAB_APP_MODULE": s.module},
                                        broker, backend, queue)
    server = s.serve(workers=1, env=env)
    worker = worker_ready(s, ping, celery_worker, broker, queue)
    alice = Actor("alice", server.port, timeout=JOB_TIMEOUT_SECONDS + 10, headers={"X-Lab-Await-Job": "1"})
    before = read_newest(s, alice, "the row as seeded, version 1")
    ack = edit_label(s, alice, before["id"], NEW_LABEL, before["version"],
                     "200 with version 2 and the id of the job it sent")
    s.note("lab mode held the edit until the worker had finished its job: inside the transaction in the "
           "broken app, after the commit in the fixed one")
    outcome: dict[str, Any] = {"state": None}
    if ack.get("job"):
        reply = alice.get(f"/api/jobs/{ack['job']}")
        outcome = reply.json() if reply.status == 200 else {"state": f"HTTP {reply.status}"}
        result = outcome.get("result") or {}
        observed = (f"{outcome.get('state')}: processed version {result.get('version')}, label {result.get('label')!r}"
                    if result else f"{outcome.get('state')}: no result")
        s.step("alice", f"GET /api/jobs/{ack['job']}", f"the job processed version {ack.get('version')}, "
               f"label {NEW_LABEL!r}", observed, reply)
    database = audit_row(s, s.engine(), before["id"], f"version {ack.get('version')}, label {NEW_LABEL!r}")
    return {"before": before, "ack": ack, "job": outcome, "worker": worker, "database": database}


def judge(observations: dict[str, Any]) -> Judgement:
    ack, job, database = observations["ack"], observations["job"], observations["database"]
    if ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the edit was not acknowledged (HTTP {ack['status']})")
    if not ack.get("job"):
        return Judgement(INCONCLUSIVE, "the edit sent no job (no broker configured in the app)")
    result = job.get("result")
    if job.get("state") != "SUCCESS" or not result:
        return Judgement(INCONCLUSIVE, f"the job did not finish (state {job.get('state')})")
    if database["version"] < ack["version"]:
        return Judgement(INCONCLUSIVE, f"the edit was acknowledged as version {ack['version']} but the database "
                                       f"has version {database['version']}: not this cause")
    if result["version"] < ack["version"]:
        return Judgement(STALE, f"the job read version {result['version']} (label {result['label']!r}) after version "
                                f"{ack['version']} was acknowledged: it ran before the edit committed", "database")
    return Judgement(FRESH, f"the job read version {result['version']} (label {result['label']!r}), the version "
                            f"acknowledged and in the database")
