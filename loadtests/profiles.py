"""How production would serve the app for each cause: gunicorn workers, threads, preload.

A load must run the app the way the bug lives in production, and the broken and the fixed
app of one cause run under the SAME profile, so the table compares the code and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Profile:
    workers: int = 2
    threads: int = 4  # > 1: gunicorn's gthread worker; 1: the sync worker
    preload: bool = False
    why: str = "the common production shape: 2 workers x 4 threads (gthread)"

    def describe(self) -> str:
        kind = f"{self.threads} threads (gthread)" if self.threads > 1 else "sync"
        return f"{self.workers} workers x {kind}" + (", --preload" if self.preload else "")


DEFAULT = Profile()

PROFILES: dict[str, Profile] = {
    "pool_across_fork": Profile(
        workers=2, threads=1, preload=True,
        why="the bug needs --preload (the pool is opened in the master, then forked) and 2 workers; "
            "sync workers, gunicorn's default, put every request of both on the inherited connection",
    ),
    "scoped_session_not_removed": Profile(
        workers=2, threads=4,
        why="a thread-local session lives as long as its thread: gthread threads outlive requests",
    ),
    "scoped_session_wrong_scope": Profile(
        workers=2, threads=4,
        why="a scope coarser than the request is shared by the threads that serve requests at once",
    ),
    "shared_session": Profile(
        workers=2, threads=4,
        why="one Session for every request: threads use it concurrently",
    ),
}


def profile_for(cause: str) -> Profile:
    return PROFILES.get(cause, DEFAULT)
