"""Task queues: enqueue_before_commit, a task published while its transaction has uncommitted writes.

Celery's `before_task_publish` signal (connected only when celery is importable: the doctor
does not need it) fires in the process that sends the task. RQ has no such signal, so, as
sentry-python's RQ integration does, the doctor wraps `rq.Queue.enqueue_job` and
`rq.Queue.enqueue_many` (only when rq is importable; the originals are put back when the
doctor is uninstalled): every `enqueue`, `enqueue_call` and `enqueue_many` passes through
them. A queue made with `is_async=False` runs the job at once in the same thread, before any
commit could matter, and is not judged.

If the running request or job has a session whose transaction wrote rows (flushed ORM
changes, or ORM-enabled / Core UPDATE, INSERT, DELETE run through the session: the same
record the `uncommitted` finding keeps) and has not committed, the worker may run before that
commit, and its own transaction will read the rows as they were before the change.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, Callable

from .sessions import TRACK_KEY

if TYPE_CHECKING:
    from .monitor import Monitor


def publish_signals() -> list[Any]:
    """The task queues' publish signals available here (none when celery is not installed)."""
    try:
        from celery import signals
    except ImportError:
        return []
    return [signals.before_task_publish]


def receiver(m: "Monitor") -> Callable[..., None]:
    def on_publish(sender: Any = None, headers: dict[str, Any] | None = None, **_: Any) -> None:
        task_name = str(sender or (headers or {}).get("task") or "?")
        task_published(m, task_name, (headers or {}).get("id"))

    return on_publish


def wrap_rq_queues(m: "Monitor") -> list[Callable[[], None]]:
    """Wrap RQ's enqueue methods (when rq is installed); returns what puts the originals back."""
    try:
        from rq import Queue
    except ImportError:
        return []
    on_enqueue = m.guard(_rq_enqueued(m))
    restores: list[Callable[[], None]] = []
    for name in ("enqueue_job", "enqueue_many"):
        original = getattr(Queue, name, None)
        if original is None or getattr(original, "__stale_doctor_original__", None) is not None:
            continue
        setattr(Queue, name, _wrapped(original, name, on_enqueue))
        restores.append(functools.partial(setattr, Queue, name, original))
    return restores


def _wrapped(original: Callable[..., Any], name: str, on_enqueue: Callable[..., None]) -> Callable[..., Any]:
    keyword = "job" if name == "enqueue_job" else "job_datas"

    @functools.wraps(original)
    def enqueue(queue: Any, *args: Any, **kwargs: Any) -> Any:
        sent = args[0] if args else kwargs.get(keyword)
        if name == "enqueue_job" and sent is not None:
            on_enqueue(queue, [sent])
        elif isinstance(sent, (list, tuple)):  # enqueue_many's list (an iterator is left unread for RQ)
            on_enqueue(queue, list(sent))
        return original(queue, *args, **kwargs)

    enqueue.__stale_doctor_original__ = original  # type: ignore[attr-defined]
    return enqueue


def _rq_enqueued(m: "Monitor") -> Callable[[Any, list[Any]], None]:
    def on_rq_enqueue(queue: Any, jobs: list[Any]) -> None:
        if not getattr(queue, "_is_async", True):
            return  # run at once, in this thread
        for job in jobs:  # a Job (its func_name), or enqueue_many's EnqueueData (its func, a callable or a path)
            func = None if hasattr(job, "func_name") else getattr(job, "func", None)
            name = getattr(job, "func_name", None) or (func if isinstance(func, str) else
                                                       f"{func.__module__}.{func.__qualname__}" if func else None)
            task_published(m, str(name or "?"), getattr(job, "id", None) or getattr(job, "job_id", None))

    return on_rq_enqueue


def task_published(m: "Monitor", task_name: str, task_id: str | None = None) -> None:
    scope = m.watched()
    if scope is None:
        return
    for session in scope.live_sessions():
        track = session.info.get(TRACK_KEY)
        if track is None or track.wrote is None or not session.in_transaction():
            continue
        tables = sorted(track.wrote["tables"])
        verbs = "/".join(sorted(track.wrote["verbs"]))
        m.emit("enqueue_before_commit",
               f"{scope.label()} sent task {task_name!r} while its transaction had sent {verbs} to "
               f"{', '.join(tables)} and not committed: the worker can run first, and its own transaction "
               f"reads those rows as they were before this change",
               f"enqueue_before_commit@{task_name}@{scope.endpoint}", scope, task=task_name, task_id=task_id,
               tables=tables, session=track.token, written_at=track.wrote.get("location"))
        return
