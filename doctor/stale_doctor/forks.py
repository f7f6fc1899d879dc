"""prefork_refresher: a thread the app started before the process forked does not run in the child.

`os.fork()` copies the memory of the process but runs only the thread that called it in the
child (Python's os.fork docs): a refresher started at import or in create_app under
`gunicorn --preload` keeps refreshing the master's copy while every worker serves the copy it
was forked with. Just before each fork (`os.register_at_fork(before=...)`), the threads alive in
the parent are noted with the function each runs (its outermost frame, from
`sys._current_frames()`); at the end of the child's first request the ones started by the
app's own code (its packages, or code outside the libraries and the standard library) that do
not run in the child, and were not started again there (no live thread with that name or
function: an app that starts its refresher lazily per process is quiet), are reported, once
per process. The doctor's own threads and the libraries' (gunicorn,
SQLAlchemy, ...) are left out. A fork only runs the hooks when it returns to Python
(os.fork, multiprocessing's fork), not a subprocess launch. The behaviour of the app is never
changed.
"""

from __future__ import annotations

import os
import sys
import sysconfig
import threading
from typing import TYPE_CHECKING, Any

from .evidence import _LIBRARY_ROOTS

if TYPE_CHECKING:
    from .monitor import Monitor

_STDLIB = tuple({os.path.realpath(p) for p in (sysconfig.get_paths()["stdlib"], sysconfig.get_paths()["platstdlib"])})


def _target(frame: Any) -> tuple[str, str] | None:
    """(module, "module:line in function") of the outermost frame that is not threading's bootstrap."""
    outermost = None
    while frame is not None:
        if frame.f_globals.get("__name__", "") != "threading":
            outermost = frame
        frame = frame.f_back
    if outermost is None:
        return None
    module = outermost.f_globals.get("__name__", "")
    return module, f"{module}:{outermost.f_code.co_firstlineno} in {outermost.f_code.co_name}"


def before_fork(m: "Monitor") -> None:
    """In the parent, just before fork(): the other threads alive now, with what each runs."""
    frames = sys._current_frames()
    me = threading.get_ident()
    threads = []
    for thread in threading.enumerate():
        if thread.ident == me or thread.ident is None or not thread.is_alive():
            continue
        frame = frames.get(thread.ident)
        target = _target(frame) if frame is not None else None
        filename = frame.f_code.co_filename if frame is not None else ""
        threads.append({"ident": thread.ident, "name": thread.name, "daemon": thread.daemon,
                        "module": target[0] if target else "", "runs": target[1] if target else None,
                        "file": filename})
    m.fork_parent = {"pid": os.getpid(), "threads": threads}


def _started_by_app(thread: dict[str, Any], packages: tuple[str, ...]) -> bool:
    root = thread["module"].split(".")[0]
    if not root or root == "stale_doctor":
        return False
    if root in packages:
        return True
    return (root not in _LIBRARY_ROOTS and "site-packages" not in thread["file"]
            and not os.path.realpath(thread["file"] or "/").startswith(_STDLIB))


def check_first_request(m: "Monitor", packages: tuple[str, ...]) -> None:
    """At the end of a forked child's first request: the app's threads the parent had that do
    not run here and were not started again (no live thread of that name or function)."""
    parent, m.fork_parent = m.fork_parent, None  # once per process
    if not parent:
        return
    frames = sys._current_frames()
    alive = [t for t in threading.enumerate() if t.is_alive()]
    names = {t.name for t in alive}
    runs = {target[1] for target in (_target(frames.get(t.ident)) for t in alive if t.ident in frames) if target}
    # No thread of the parent but the forking one exists here; a thread ident the child reuses (a
    # pthread's address: gunicorn's gthread pool gets the dead thread's) says nothing of it.
    lost = [t for t in parent["threads"] if t["name"] not in names and t["runs"] not in runs
            and _started_by_app(t, packages)]
    if not lost:
        return
    described = ", ".join(f"{t['name']!r} ({t['runs']})" for t in lost)
    m.emit("prefork_refresher",
           f"thread {described} was running in process {parent['pid']} when it forked this process {os.getpid()}, "
           "and runs nowhere here (not started again by its first request): fork() copies memory but not threads, "
           "so whatever it keeps current (a cache, a refreshed table) is a copy from the fork in this process",
           f"{parent['pid']}:{','.join(t['name'] for t in lost)}", m.watched(),
           parent_pid=parent["pid"], lost_threads=[{k: t[k] for k in ("name", "runs", "daemon")} for t in lost])
