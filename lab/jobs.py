"""Background jobs through Celery: a notice that a transaction's label changed, read by a worker.

Flask's "Background Tasks with Celery" pattern: one Celery app per Flask app, kept in
`app.extensions["celery"]`, whose tasks run inside an app context of their own, so each task
gets a new Flask-SQLAlchemy session (a short transaction of its own, ended when the task's
context is torn down). Configuration, from the environment like the database URL:
- `LAB_BROKER_URL`: the broker. Unset: no jobs are sent at all (the app works without a
  queue). `redis://...` as in production; `sqla+sqlite:////abs/broker.db` (kombu's SQLAlchemy
  transport) needs no server: the embedded default, polled once a second by the worker.
- `LAB_RESULT_BACKEND`: where results are kept; by default the broker's Redis, or for a
  SQLite broker `db+sqlite:////abs/results.db` beside it (`embedded_urls` makes both).
- `LAB_JOBS_QUEUE`: the queue the app sends to and the worker consumes (`-Q`); parallel runs
  on one Redis use one queue each, so no run consumes another's jobs.
The worker: `LAB_APP_MODULE=fixed.app celery -A lab.celery_worker worker --pool=solo -Q <queue>`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from celery import Celery, Task
from flask import Flask
from sqlalchemy.orm import Session

from lab import labmode, queries, web

DEFAULT_QUEUE = "lab"
LABEL_CHANGED = "lab.jobs.label_changed"
PING = "lab.jobs.ping"


def embedded_urls(directory: Path) -> tuple[str, str]:
    """Broker and result URLs on two SQLite files in `directory`: no server needed."""
    directory = directory.resolve()
    return f"sqla+sqlite:///{directory / 'broker.db'}", f"db+sqlite:///{directory / 'results.db'}"


def result_backend_for(broker: str) -> str:
    explicit = os.environ.get("LAB_RESULT_BACKEND")
    if explicit:
        return explicit
    if broker.startswith("sqla+sqlite:///"):
        return "db+sqlite:///" + str(Path(broker.removeprefix("sqla+sqlite:///")).with_name("results.db"))
    return broker  # Redis: the broker's server keeps the results too


def make_celery(name: str, broker: str, backend: str | None = None, queue: str | None = None,
                task_cls: type[Task] | str = "celery.app.task:Task") -> Celery:
    celery = Celery(name, broker=broker, backend=backend or result_backend_for(broker), task_cls=task_cls)
    celery.conf.update(
        task_default_queue=queue or os.environ.get("LAB_JOBS_QUEUE") or DEFAULT_QUEUE,
        broker_connection_retry_on_startup=True,
        result_expires=3600,
        worker_hijack_root_logger=False,
    )
    return celery


def install(app: Flask, session: Callable[[], Session]) -> Celery | None:
    """Give `app` its Celery app and tasks (None, and nothing sent, when no broker is configured)."""
    broker = app.config.get("LAB_BROKER_URL") or os.environ.get("LAB_BROKER_URL")
    if not broker:
        return None

    class FlaskTask(Task):  # type: ignore[misc]
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():  # a new app context, so a new session, for every task
                labmode.name_job_actor("worker")
                return self.run(*args, **kwargs)

    celery = make_celery(app.name, broker, app.config.get("LAB_RESULT_BACKEND"), app.config.get("LAB_JOBS_QUEUE"),
                         task_cls=FlaskTask)

    @celery.task(name=LABEL_CHANGED, shared=False)
    def label_changed(tx_id: int) -> dict[str, Any]:
        """The notice of a label change: the row as the worker's own transaction reads it."""
        row = web.row_dict(queries.get_transaction(session(), tx_id))
        return {"id": row["id"], "version": row["version"], "label": row["label"], "worker_pid": os.getpid(),
                "notice": f"transaction {row['id']} is now labelled {row['label']!r} (version {row['version']})"}

    @celery.task(name=PING, shared=False)
    def ping() -> int:
        return os.getpid()

    app.extensions["celery"] = celery

    @app.get("/api/jobs/<job_id>")
    def api_job(job_id: str) -> dict[str, Any]:
        result = celery.AsyncResult(job_id)
        return {"id": job_id, "state": result.state, "result": result.result if result.successful() else None}

    return celery


def send_label_changed(app: Flask, tx_id: int) -> dict[str, str]:
    """Send the label-changed notice of row `tx_id`; returns {"job": its id} ({} with no broker).

    Call it once the edit is committed: the worker reads the row in a transaction of its own,
    which sees only what is committed when it runs."""
    celery: Celery | None = app.extensions.get("celery")
    if celery is None:
        return {}
    result = celery.send_task(LABEL_CHANGED, args=[tx_id])
    labmode.await_job(result)
    return {"job": result.id}
