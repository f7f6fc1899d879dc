"""What a scenario can see from outside the app: a server connection's transaction, the
transaction log, the exception behind a 500, and a bounded burst of concurrent requests."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable

from sqlalchemy import Engine, text

from lab.harness.scenario import Scenario
from lab.harness.server import Actor, GunicornServer
from lab.harness.steering import Steering
from lab.harness.steps import read_newest

# The last line of a traceback the app logged: the exception a 500 hides from the client.
ERROR_LINE = re.compile(r"^((?:sqlalchemy|psycopg|pymysql|sqlite3)[\w.]*(?:Error|Exception|Timeout)\w*: .{0,160})",
                        re.MULTILINE)



def connection_state(engine: Engine, conn_id: str) -> dict[str, Any]:
    """Is server connection `conn_id` (an X-DB-Conn value) alive, and inside a transaction?

    PostgreSQL: its row in pg_stat_activity ("idle in transaction" = a transaction left open).
    MariaDB: its processlist row and its InnoDB transaction, if any. SQLite has no server to
    ask: the transaction log is the only witness there.
    """
    if engine.dialect.name == "sqlite" or not conn_id.isdigit():
        return {"known": False}
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            row = connection.execute(
                text("SELECT state, xact_start IS NOT NULL FROM pg_stat_activity WHERE pid = :pid"),
                {"pid": int(conn_id)},
            ).one_or_none()
            if row is None:
                return {"known": True, "alive": False, "in_transaction": False, "state": "gone"}
            return {"known": True, "alive": True, "in_transaction": bool(row[1]), "state": row[0]}
        alive = connection.execute(
            text("SELECT command FROM information_schema.processlist WHERE id = :id"), {"id": int(conn_id)}
        ).one_or_none()
        trx = connection.execute(
            text("SELECT trx_state FROM information_schema.innodb_trx WHERE trx_mysql_thread_id = :id"),
            {"id": int(conn_id)},
        ).one_or_none()
    state = "gone" if alive is None else f"{alive[0]}" + (f", InnoDB transaction {trx[0]}" if trx else "")
    return {"known": True, "alive": alive is not None, "in_transaction": trx is not None, "state": state}


def wait_until_gone(engine: Engine, conn_id: str, limit_seconds: float) -> float:
    """Poll (bounded) until the server has ended connection `conn_id`; return seconds waited."""
    start = time.monotonic()
    while connection_state(engine, conn_id).get("alive"):
        if time.monotonic() - start > limit_seconds:
            raise TimeoutError(f"server connection {conn_id} still alive after {limit_seconds:.0f} s")
        time.sleep(0.25)
    return round(time.monotonic() - start, 1)


# The app's guard is 30 s; scenarios that wait for it to fire serve the app with this instead
# (the same guard, shorter), so a run does not sit idle for half a minute.
SCENARIO_IDLE_TIMEOUT_MS = 5_000
SHORT_IDLE_TIMEOUT_ENV = {"LAB_IDLE_IN_TRANSACTION_TIMEOUT_MS": str(SCENARIO_IDLE_TIMEOUT_MS)}


def outlive_idle_timeout(s: Scenario, steer: Steering, auditor: Engine, conn_id: str,
                         state: dict[str, Any]) -> float:
    """PostgreSQL: wait (polling, bounded) until the server's idle_in_transaction_session_timeout
    ends connection `conn_id`, if it is idle in a transaction; return the seconds waited.

    The holds would end by themselves meanwhile, so they are released and taken again.
    """
    if not state.get("in_transaction"):
        s.note(f"connection {conn_id} holds no transaction: the idle-in-transaction guard has nothing to end")
        return 0.0
    steer.release_all()
    waited = wait_until_gone(auditor, conn_id, SCENARIO_IDLE_TIMEOUT_MS / 1000 + 20)
    s.step("auditor", f"wait until PostgreSQL ends connection {conn_id} (idle in transaction)",
           f"ended by idle_in_transaction_session_timeout ({SCENARIO_IDLE_TIMEOUT_MS // 1000} s, as the scenario serves the app)",
           f"connection {conn_id} gone after {waited} s")
    steer.retake()
    return waited


def read_on(s: Scenario, steer: Steering, slot: str, actor: Actor, expected: str) -> dict[str, Any]:
    """Read the newest row on `slot` (every other slot held busy); note where it was steered."""
    steer.only(slot)
    seen = read_logged(s, actor, steer.server, expected)
    seen["steered_to"], seen["steering_valid_until"] = slot, steer.valid_until()
    return seen


def served_where_steered(seen: dict[str, Any]) -> bool:
    """Did the read land on its slot? A 500 raised by a broken session loses X-Served-By (lab
    mode's header hook fails as well): it counts when it came back while every other slot was
    certainly still held (gunicorn had nowhere else to send it)."""
    if seen["served_by"] != "?":
        return seen["served_by"] == seen["steered_to"]
    return seen["received_at"] < seen["steering_valid_until"]


def read_logged(s: Scenario, actor: Actor, server: GunicornServer, expected: str) -> dict[str, Any]:
    """`read_newest`, plus the exception the app logged while serving it (for a 500's cause)."""
    before = len(server.log_path.read_text(errors="replace"))
    seen = read_newest(s, actor, expected)
    errors = ERROR_LINE.findall(server.log_path.read_text(errors="replace")[before:])
    seen["logged_error"] = errors[0] if errors else ""  # the first: raised by the route itself
    if errors:
        s.note(f"app log: {errors[0]}")
    return seen


def short_error(logged: str) -> str:
    """'sqlalchemy.exc.X: message.  (Background...' -> 'X: message' (for one-line proofs)."""
    text = re.sub(r"^[\w.]*\.(?=\w+: )", "", logged)
    return re.split(r"\.  | \(Background", text)[0]


def transaction_events(s: Scenario, actor: str | None = None) -> list[dict[str, Any]]:
    """Every BEGIN/COMMIT/ROLLBACK the app logged so far (optionally one actor's), in order."""
    lines = s.txlog_path.read_text(encoding="utf-8").splitlines()
    events = [json.loads(line) for line in lines if line.strip()]
    return [e for e in events if actor is None or e["actor"] == actor]


def skip_transaction_events(s: Scenario) -> None:
    """Keep the events logged so far out of the next step's listing (a burst logs hundreds;
    the caller summarises them with `connections_by_process`). Uses the Scenario's private
    reader: the harness has no public way to do this yet."""
    s._new_transaction_events()


def connections_by_process(events: list[dict[str, Any]]) -> dict[str, list[int]]:
    """Server connection id -> the process ids that ran transactions on it."""
    found: dict[str, set[int]] = {}
    for event in events:
        found.setdefault(str(event["conn"]), set()).add(int(event["pid"]))
    return {conn: sorted(pids) for conn, pids in sorted(found.items())}


def burst(actor: Actor, paths: list[str], parallel: int,
          check: Callable[[str, Any], bool]) -> dict[str, Any]:
    """Send `paths` `parallel` at a time; count answers that are right, wrong (crossed) or errors."""

    def one(path: str) -> tuple[str, str, str]:
        try:
            reply = actor.get(path)
        except OSError as error:  # timeouts and resets count as errors caused by the bug
            return "error", f"{type(error).__name__}", "?"
        if reply.status != 200:
            return "error", f"HTTP {reply.status}", reply.served_by
        return ("ok" if check(path, reply.json()) else "crossed"), "", reply.served_by

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        outcomes = list(pool.map(one, paths))
    errors: dict[str, int] = {}
    for kind, detail, _ in outcomes:
        if kind == "error":
            errors[detail] = errors.get(detail, 0) + 1
    return {
        "requests": len(paths),
        "parallel": parallel,
        "ok": sum(1 for kind, _, _ in outcomes if kind == "ok"),
        "crossed": sum(1 for kind, _, _ in outcomes if kind == "crossed"),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "workers": sorted({served.split("/")[0] for _, _, served in outcomes if served != "?"}),
    }


def row_lock_waiters(engine: Engine) -> list[str]:
    """The server connections of this database that are waiting for a row lock right now,
    as "<connection id>: <statement>" (PostgreSQL: pg_stat_activity's wait_event_type 'Lock';
    MariaDB: a statement ending in FOR UPDATE still running: it can only be waiting for a lock
    held by another transaction). SQLite has no row locks, and no view of other connections."""
    if engine.dialect.name == "postgresql":
        sql = ("SELECT pid, query FROM pg_stat_activity WHERE datname = current_database()"
               " AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'")
    elif engine.dialect.name in ("mysql", "mariadb"):
        # PROCESSLIST is live (INNODB_TRX is a cache refreshed at most every 0.1 s).
        sql = ("SELECT ID, INFO FROM information_schema.PROCESSLIST WHERE DB = DATABASE()"
               " AND ID <> CONNECTION_ID() AND COMMAND = 'Query' AND INFO LIKE '%%FOR UPDATE'")
    else:
        return []
    with engine.connect() as connection:
        rows = connection.exec_driver_sql(sql).all()
    return [f"{conn_id}: ...{_from_clause(str(query))}" for conn_id, query in rows]


def _from_clause(statement: str) -> str:
    statement = " ".join(statement.split())
    return statement[statement.find(" FROM "):] if " FROM " in statement else statement[-60:]


def wait_for_row_lock_waiter(engine: Engine, limit_seconds: float) -> list[str]:
    """Poll (bounded) until some connection of this database waits for a row lock."""
    deadline = time.monotonic() + limit_seconds
    while True:
        waiters = row_lock_waiters(engine)
        if waiters or time.monotonic() > deadline:
            return waiters
        time.sleep(0.01)
