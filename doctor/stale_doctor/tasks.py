"""Task queues: enqueue_before_commit, a task published while its transaction has uncommitted writes.

Celery's `before_task_publish` signal (connected only when celery is importable: the doctor
does not need it) fires in the process that sends the task. If the running request or job
has a session whose transaction wrote rows (flushed ORM changes, or ORM-enabled / Core
UPDATE, INSERT, DELETE run through the session: the same record the `uncommitted` finding
keeps) and has not committed, the worker may run before that commit, and its own transaction
will read the rows as they were before the change.
"""

from __future__ import annotations

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
