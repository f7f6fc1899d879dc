"""Connections and transactions: pool_across_fork, long_transaction, background_app_context.

Each pooled connection is stamped when the pool makes it (the creating pid) and described
once (server connection id, isolation level); each transaction is stamped at BEGIN with its
start time and the scope (request or job) that began it. Open transactions are kept in a
per-process table that COMMIT / ROLLBACK / check-in empty, and swept (its ages judged) at each
request start, at a pool checkout or a statement at most once a second, and at interpreter exit,
because a transaction that never ends fires no event: a worker's job that began one and died
before its commit, in an app context pushed at import, meets no request and no end.
"""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .evidence import ISOLATION_KEY, PID_KEY, SERVER_ID_KEY, describe_connection, isolation_note
from .scopes import Scope, current

if TYPE_CHECKING:
    from .monitor import Monitor

TX_KEY = "stale_doctor.tx"
SWEEP_EVERY_SECONDS = 1.0  # the open transactions' ages, judged at a checkout or statement at most this often


@dataclass(eq=False)
class TxInfo:
    started: float
    scope_serial: int
    scope_kind: str | None
    scope_label: str
    scope_summary: dict[str, Any] | None
    isolation: str | None
    server_id: str | None
    pid: int
    thread: str
    session_token: str | None = None
    explained: bool = False  # another finding (scoped session, shared session) already names it
    reported: bool = False

    def age(self) -> float:
        return time.monotonic() - self.started

    def evidence(self) -> dict[str, Any]:
        return {"transaction_age_seconds": round(self.age(), 3), "isolation_level": self.isolation,
                "server_connection_id": self.server_id, "session": self.session_token,
                "transaction_began_in": self.scope_summary}


def on_pool_connect(m: "Monitor", record: Any) -> None:
    record.info[PID_KEY] = os.getpid()


def on_engine_connect(m: "Monitor", conn: Any) -> None:
    info = conn.info
    if SERVER_ID_KEY in info:
        return
    # Once per pooled connection, before any transaction of the app's begins on it.
    dbapi = conn.connection.dbapi_connection
    info[SERVER_ID_KEY], info[ISOLATION_KEY] = describe_connection(dbapi, conn.dialect)


def on_checkout(m: "Monitor", record: Any) -> None:
    maybe_sweep(m)
    made_by = record.info.get(PID_KEY)
    if made_by is None:  # made before the doctor was installed: this process is the first seen using it
        record.info[PID_KEY] = os.getpid()
        return
    if made_by == os.getpid():
        return
    scope = m.watched()
    server_id = record.info.get(SERVER_ID_KEY, "?")
    m.emit("pool_across_fork",
           f"pooled connection {server_id} was made by process {made_by} and is now checked out by process "
           f"{os.getpid()}: both processes talk over one server connection",
           f"{made_by}->{os.getpid()}:{server_id}", scope,
           server_connection_id=server_id, created_by_pid=made_by, checked_out_by_pid=os.getpid())


def on_checkin(m: "Monitor", record: Any) -> None:
    if record is None:
        return
    tx = record.info.pop(TX_KEY, None)
    if tx is not None:
        m.open_transactions.pop(id(record.info), None)


def on_begin(m: "Monitor", conn: Any) -> None:
    scope = current.get()
    info = conn.info
    isolation = conn.get_execution_options().get("isolation_level") or info.get(ISOLATION_KEY)
    tx = TxInfo(time.monotonic(), scope.serial if scope else 0, scope.kind if scope else None,
                scope.label() if scope else "outside any request or job", scope.summary() if scope else None,
                isolation, info.get(SERVER_ID_KEY), os.getpid(), threading.current_thread().name)
    info[TX_KEY] = tx
    m.open_transactions[id(info)] = tx


def on_end(m: "Monitor", conn: Any, committed: bool) -> None:
    info = conn.info
    tx = info.pop(TX_KEY, None)
    m.open_transactions.pop(id(info), None)
    if tx is not None and not tx.reported and not tx.explained:
        check_age(m, tx, current.get(), ended=True)


def check_age(m: "Monitor", tx: TxInfo, scope: Scope | None, ended: bool = False,
              location: str | None = None) -> None:
    """A job's transaction older than the job threshold, any other older than the transaction one."""
    settings = m.settings_for(scope)
    if settings is None:
        return
    age = tx.age()
    how = "ended after" if ended else "has been open for"
    if tx.scope_kind == "job":
        cause, key, limit = "background_app_context", "STALE_DOCTOR_JOB_MAX_SECONDS", settings.job_max_seconds
        consequence = ", outside any request,"
        lesson = ": every job in that app context shares one session and one transaction;"
    else:
        cause, key, limit = "long_transaction", "STALE_DOCTOR_TRANSACTION_MAX_SECONDS", settings.transaction_max_seconds
        consequence, lesson = "", ";"
    if age <= limit:
        return
    tx.reported = True
    m.emit(cause, f"a transaction begun in {tx.scope_label}{consequence} {how} {age:.1f} s ({key}={limit:g})"
                  f"{lesson} {isolation_note(tx.isolation)}",
           f"{cause}@{_where(tx)}", scope, location="" if ended else location, **tx.evidence())


def _where(tx: TxInfo) -> str:
    """What a repeated finding is about: the endpoint or job that began the transaction."""
    summary = tx.scope_summary or {}
    return str(summary.get("endpoint") or summary.get("job") or "outside")


def sweep_ages(m: "Monitor", scope: Scope | None) -> None:
    """Transactions that never end fire no event: judge the open ones' ages (at a request's start,
    at a checkout or statement now and then, at exit). The frame running now is not theirs."""
    m.last_sweep = time.monotonic()
    for tx in list(m.open_transactions.values()):
        if not tx.reported and not tx.explained:
            check_age(m, tx, scope, location="")


def maybe_sweep(m: "Monitor") -> None:
    """The cheap check where the doctor already runs (a checkout, a statement): one clock read."""
    if m.open_transactions and time.monotonic() - m.last_sweep >= SWEEP_EVERY_SECONDS:
        sweep_ages(m, current.get())


def check_job_end(m: "Monitor", scope: Scope) -> None:
    """A job (or a non-request app context) ends: its transactions must end with it.

    A transaction a `doctor.job()` began and left open outlives it, whatever its age: the next
    job in the same app context continues it. One an app context left open is judged by age.
    """
    for tx in list(m.open_transactions.values()):
        if tx.scope_serial != scope.serial or tx.scope_kind != "job" or tx.reported:
            continue
        if scope.placeholder:
            check_age(m, tx, scope)
            continue
        tx.reported = True
        m.emit("background_app_context",
               f"{scope.label()} ended with the transaction it began still open ({tx.age():.1f} s, "
               f"{tx.isolation}): the next job in this app context continues it, reading its old snapshot",
               f"jobend:{scope.name}", scope, location="", **tx.evidence())
