"""Who is running now: a request or a job, kept in a contextvar (never keyed on thread ids).

gthread reuses threads and `id()` addresses are recycled, so ownership is keyed on a serial
that only grows. A `Scope` holds no strong reference to sessions or ORM objects: weakrefs only.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import weakref
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

_serials = itertools.count(1)
current: ContextVar["Scope | None"] = ContextVar("stale_doctor_scope", default=None)


@dataclass(eq=False)
class Scope:
    """One request, or one job (an app context pushed outside a request, or `doctor.job()`)."""

    kind: str  # "request" | "job"
    app: Any  # the Flask app, by weak reference (see `app_ref`)
    name: str  # "GET /transactions" or the job's name
    method: str = ""
    path: str = ""
    endpoint: str | None = None
    previous: "Scope | None" = None
    placeholder: bool = False  # an app context pushed outside a request: a job until a request claims it
    serial: int = field(default_factory=lambda: next(_serials))
    pid: int = field(default_factory=os.getpid)
    thread: int = field(default_factory=threading.get_ident)
    thread_name: str = field(default_factory=lambda: threading.current_thread().name)
    started: float = field(default_factory=time.monotonic)
    ended: bool = False
    status: int | None = None
    statements: int = 0
    tables_read: set[str] = field(default_factory=set)
    sessions: list["weakref.ReferenceType[Any]"] = field(default_factory=list)
    session_ids: set[int] = field(default_factory=set)
    loaded: list["weakref.ReferenceType[Any]"] = field(default_factory=list)
    loaded_states: list[tuple[Any, Any, dict[str, Any]]] = field(default_factory=list)  # (mapper, identity key, attributes as loaded)
    locking_reads: bool = False
    # identity_map: the main table of the ORM SELECT being run, and per table the statement
    # number of its latest locking read (FOR UPDATE / FOR SHARE) in this scope.
    selecting: str | None = None
    locked_at: dict[str, int] = field(default_factory=dict)
    data_cache_hit: bool = False  # a watched Flask-Caching store answered in this request (datacache)
    replica_checked: set[str] = field(default_factory=set)  # standby connections whose replay was checked
    requests_served: int = 0  # for a placeholder: how many requests reused this app context
    pending_raise: list[Any] = field(default_factory=list)
    _label: str | None = field(default=None, init=False, repr=False)
    # What each object this scope loads is stamped with (made once: the stamp is set per loaded row).
    stamp: tuple[int, int, str] = field(default=(0, 0, ""), init=False, repr=False)

    def __post_init__(self) -> None:
        self.app = weakref.ref(self.app) if self.app is not None else (lambda: None)
        self.stamp = (self.serial, self.pid, self.label())

    def use_session(self, session: Any) -> bool:
        """Remember that this scope used `session`; True the first time."""
        key = id(session)
        if key in self.session_ids:
            return False
        self.session_ids.add(key)
        self.sessions.append(weakref.ref(session))
        return True

    def live_sessions(self) -> list[Any]:
        return [s for s in (ref() for ref in self.sessions) if s is not None]

    def summary(self) -> dict[str, Any]:
        """The evidence that names this scope in a finding."""
        data: dict[str, Any] = {"kind": self.kind, "serial": self.serial, "pid": self.pid,
                                "thread": self.thread_name, "thread_id": self.thread}
        if self.kind == "request":
            data.update(method=self.method, path=self.path, endpoint=self.endpoint)
            if self.status is not None:
                data["status"] = self.status
        else:
            data["job"] = self.name
        return data

    def label(self) -> str:
        if self._label is None:  # kind, serial and name never change after creation
            self._label = (f"request #{self.serial} ({self.name})" if self.kind == "request"
                           else f"job #{self.serial} ({self.name})")
        return self._label


def push(scope: Scope) -> Any:
    """Make `scope` the running one, above the one running now; returns the contextvar token."""
    scope.previous = current.get()
    return current.set(scope)


def live_requests_skipped(scope: Scope | None) -> Scope | None:
    """The scope below any ended request scopes (an app context reused by several requests)."""
    while scope is not None and scope.kind == "request" and scope.ended:
        scope = scope.previous
    return scope
