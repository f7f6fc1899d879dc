"""`make isolation`: what each isolation level really does on each backend, measured, not quoted.

For every backend and level, two transactions on their own connections, A (the reader) and
B (the writer), on a small table of counters in a private database:
- non-repeatable read: A reads a row; B changes it and commits; A reads it again.
  "seen" (A's second read shows B's commit) / "not seen" / "blocked" (B had to wait until A's
  transaction ended: the level locks what A read, so there is no commit to see).
- phantom: A counts the rows of a group; B inserts one into that group and commits; A counts again.
- lost update: A and B both read the counter, then each writes what it read + 1 and commits
  (A first). "lost" (both committed, the counter went up by one), "refused" (the database
  refused one of them: serialization failure, deadlock, "database is locked"), "kept" (+2).
- ORM re-query: an ORM session at that level loads the row as an object; B commits a change;
  the session re-queries the entity. "old": the identity map keeps the loaded attributes even
  when the database returned the new row; "new". Then the same with populate_existing.
B's work runs beside A in a thread; the probe waits until B has finished or the server says B
waits for a lock (pg_stat_activity, information_schema.innodb_trx), never for a fixed time.
The table is compared with scenarios/expected_isolation.json; any difference exits 1.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable

from sqlalchemy import Connection, Engine, String, create_engine, delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from lab import databases
from lab.engine import REPO_ROOT, backend_of, configure_engine, engine_options, server_version

EXPECTED_FILE = REPO_ROOT / "scenarios" / "expected_isolation.json"
LEVELS = {
    "sqlite": ["SERIALIZABLE"],  # its one level: deferred BEGIN (lab.engine's recipe) in WAL mode
    "postgresql": ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"],
    "mariadb": ["READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE"],
}
COLUMNS = {
    "non_repeatable_read": "non-repeatable read",
    "phantom": "phantom",
    "lost_update": "lost update",
    "orm_requery": "ORM re-query",
    "orm_populate_existing": "ORM populate_existing",
}
WAIT_LIMIT_SECONDS = 10.0  # B neither finished nor waits for a lock by then: something else is wrong


class ProbeBase(DeclarativeBase):
    pass


class Counter(ProbeBase):
    """One counter row per probe; `grp` is what the phantom probe counts by."""

    __tablename__ = "iso_probe"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=False)
    grp: Mapped[str] = mapped_column(String(10), index=True)
    n: Mapped[int]


ROW, GROUP = 1, "g"
Probe = Callable[[Engine, "Watch"], tuple[str, str]]  # -> (cell, detail)


# ---- B beside A --------------------------------------------------------------------------


class Watch:
    """Asks the server whether a given connection is waiting for a lock (SQLite: never asked)."""

    def __init__(self, url: str) -> None:
        self.backend = backend_of(url)
        self.engine = None if self.backend == "sqlite" else create_engine(url, isolation_level="AUTOCOMMIT")
        # InnoDB refreshes information_schema.innodb_trx only when nobody read it for 0.1 s
        # (measured: polled every 5 ms it never showed the LOCK WAIT), so ask less often there.
        self.poll_seconds = 0.15 if self.backend == "mariadb" else 0.005

    def connection_id(self, connection: Connection) -> str:
        if self.backend == "sqlite":
            return ""
        query = "SELECT pg_backend_pid()" if self.backend == "postgresql" else "SELECT CONNECTION_ID()"
        value = connection.exec_driver_sql(query).scalar_one()
        connection.rollback()  # the probe's transaction starts with its own first statement
        return str(value)

    def waiting(self, connection_id: str) -> bool:
        if self.engine is None:
            return False
        with self.engine.connect() as monitor:
            if self.backend == "postgresql":
                state = monitor.execute(text("SELECT wait_event_type FROM pg_stat_activity WHERE pid = :id"),
                                        {"id": int(connection_id)}).scalar()
                return state == "Lock"
            state = monitor.execute(text("SELECT trx_state FROM information_schema.innodb_trx "
                                         "WHERE trx_mysql_thread_id = :id"), {"id": int(connection_id)}).scalar()
            return state == "LOCK WAIT"

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def beside(work: Callable[[], str], watch: Watch, connection_id: str) -> tuple[Callable[[], str], bool]:
    """Start `work` in a thread; return once it finished or waits for a lock: (finish, blocked)."""
    box: dict[str, str] = {}

    def target() -> None:
        try:
            box["outcome"] = work()
        except DBAPIError as error:
            box["outcome"] = "refused: " + refusal(error)
        except Exception as error:  # reported in the table's details, never swallowed silently
            box["outcome"] = f"failed: {type(error).__name__}: {error}"

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_LIMIT_SECONDS
    while thread.is_alive() and not watch.waiting(connection_id):
        if time.monotonic() > deadline:
            raise TimeoutError(f"B neither finished nor waited for a lock within {WAIT_LIMIT_SECONDS} s")
        time.sleep(watch.poll_seconds)
    blocked = thread.is_alive()

    def finish() -> str:
        thread.join(WAIT_LIMIT_SECONDS)
        if thread.is_alive():
            raise TimeoutError(f"B did not finish within {WAIT_LIMIT_SECONDS} s after A's transaction ended")
        return box["outcome"]

    return finish, blocked


def refusal(error: DBAPIError) -> str:
    """'SerializationFailure 40001: could not serialize ...', 'OperationalError 1213: Deadlock ...'."""
    orig = error.orig
    code = getattr(orig, "sqlstate", None) or (orig.args[0] if orig.args and isinstance(orig.args[0], int) else "")
    message = str(orig.args[1] if len(orig.args) > 1 else orig).splitlines()[0]
    return f"{type(orig).__name__} {code}".strip() + f": {message[:90]}"


def committed(connection: Connection, statement: Any) -> Callable[[], str]:
    def work() -> str:
        try:
            connection.execute(statement)
            connection.commit()
            return "committed"
        except DBAPIError:
            connection.rollback()
            raise
    return work


# ---- the probes ----------------------------------------------------------------------------


def reset(engine: Engine) -> None:
    with engine.begin() as connection:
        connection.execute(delete(Counter))
        connection.execute(insert(Counter), [{"id": ROW, "grp": GROUP, "n": 0}, {"id": 2, "grp": "other", "n": 0}])


def read_n(connection: Connection) -> int:
    return int(connection.execute(select(Counter.n).where(Counter.id == ROW)).scalar_one())


def pair(engine: Engine, watch: Watch) -> tuple[Connection, Connection, str, str]:
    a, b = engine.connect(), engine.connect()
    return a, b, watch.connection_id(a), watch.connection_id(b)


def non_repeatable_read(engine: Engine, watch: Watch) -> tuple[str, str]:
    a, b, _a_id, b_id = pair(engine, watch)
    try:
        first = read_n(a)
        finish, blocked = beside(committed(b, update(Counter).where(Counter.id == ROW).values(n=Counter.n + 1)),
                                 watch, b_id)
        second = read_n(a)
        a.rollback()  # ends A's transaction: a blocked B goes on now
        outcome = finish()
    finally:
        a.close()
        b.close()
    if blocked:
        return "blocked", f"B's UPDATE waited for A's transaction to end, then {outcome}"
    return ("seen" if second != first else "not seen"), f"A read {first}, then {second}; B {outcome}"


def phantom(engine: Engine, watch: Watch) -> tuple[str, str]:
    a, b, _a_id, b_id = pair(engine, watch)
    count = select(func.count()).select_from(Counter).where(Counter.grp == GROUP)
    try:
        first = int(a.execute(count).scalar_one())
        finish, blocked = beside(committed(b, insert(Counter).values(id=3, grp=GROUP, n=0)), watch, b_id)
        second = int(a.execute(count).scalar_one())
        a.rollback()
        outcome = finish()
    finally:
        a.close()
        b.close()
    if blocked:
        return "blocked", f"B's INSERT waited for A's transaction to end, then {outcome}"
    return ("seen" if second != first else "not seen"), f"A counted {first}, then {second}; B {outcome}"


def lost_update(engine: Engine, watch: Watch) -> tuple[str, str]:
    a, b, a_id, _b_id = pair(engine, watch)
    try:
        start = read_n(a)
        b_read = read_n(b)
        finish_a, a_blocked = beside(committed(a, update(Counter).where(Counter.id == ROW).values(n=start + 1)),
                                     watch, a_id)
        try:
            b_outcome = committed(b, update(Counter).where(Counter.id == ROW).values(n=b_read + 1))()
        except DBAPIError as error:
            b_outcome = "refused: " + refusal(error)
        a_outcome = finish_a()
    finally:
        a.close()
        b.close()
    with engine.connect() as auditor:
        final = read_n(auditor)
    detail = f"both read {start}; A {a_outcome}{' (after waiting for B)' if a_blocked else ''}; B {b_outcome}; counter {final}"
    if "refused" in a_outcome or "refused" in b_outcome:
        return "refused", detail
    if a_outcome == b_outcome == "committed":
        return ("lost" if final == start + 1 else "kept" if final == start + 2 else f"counter {final}"), detail
    return "error", detail


def orm_probe(populate_existing: bool) -> Probe:
    def probe(engine: Engine, watch: Watch) -> tuple[str, str]:
        b = engine.connect()
        b_id = watch.connection_id(b)
        try:
            with Session(engine) as session:
                held = session.get(Counter, ROW)
                assert held is not None
                loaded = held.n
                finish, blocked = beside(committed(b, update(Counter).where(Counter.id == ROW).values(n=loaded + 10)),
                                         watch, b_id)
                statement = select(Counter).where(Counter.id == ROW)
                if populate_existing:
                    statement = statement.execution_options(populate_existing=True)
                again = session.execute(statement).scalar_one()
                seen, same = again.n, again is held
                session.rollback()
                outcome = finish()
        finally:
            b.close()
        if blocked:
            return "blocked", f"B's UPDATE waited for the session's transaction to end, then {outcome}"
        cell = "new" if seen == loaded + 10 else "old" if seen == loaded else f"n={seen}"
        return cell, f"loaded n={loaded}; B {outcome} n={loaded + 10}; re-query gave n={seen} (same object: {same})"
    return probe


PROBES: dict[str, Probe] = {
    "non_repeatable_read": non_repeatable_read,
    "phantom": phantom,
    "lost_update": lost_update,
    "orm_requery": orm_probe(populate_existing=False),
    "orm_populate_existing": orm_probe(populate_existing=True),
}


# ---- per backend, per level ------------------------------------------------------------


def effective_level(engine: Engine) -> str:
    """The level a new transaction really runs at, asked from the server."""
    with engine.connect() as connection:
        if connection.dialect.name == "sqlite":
            mode = connection.exec_driver_sql("PRAGMA journal_mode").scalar_one()
            return f"SERIALIZABLE (deferred BEGIN, journal_mode={mode})"
        if connection.dialect.name == "postgresql":
            return str(connection.exec_driver_sql("SHOW transaction_isolation").scalar_one()).upper()
        # MariaDB 10.11: @@tx_isolation (@@transaction_isolation is error 1193 there).
        return str(connection.exec_driver_sql("SELECT @@tx_isolation").scalar_one()).replace("-", " ").upper()


def probe_backend(backend: str, url: str) -> dict[str, Any]:
    """{"server": "PostgreSQL 15.20", "levels": {level: {column: cell}}, "details": {level: {column: text}}}."""
    setup = configure_engine(create_engine(url, **engine_options(url)))
    watch = Watch(url)
    result: dict[str, Any] = {"server": server_version(setup), "levels": {}, "details": {}}
    try:
        ProbeBase.metadata.create_all(setup)
        for level in LEVELS[backend]:
            options = engine_options(url) | ({} if backend == "sqlite" else {"isolation_level": level})
            engine = configure_engine(create_engine(url, **options))
            try:
                actual = effective_level(engine)
                if not actual.startswith(level):
                    raise RuntimeError(f"{backend}: asked for {level}, the server runs {actual}")
                cells, details = {}, {"level": actual}
                for column, probe in PROBES.items():
                    reset(setup)
                    cells[column], details[column] = probe(engine, watch)
                result["levels"][level], result["details"][level] = cells, details
            finally:
                engine.dispose()
    finally:
        watch.close()
        setup.dispose()
    return result


def load_expected() -> dict[str, dict[str, dict[str, str]]]:
    return json.loads(EXPECTED_FILE.read_text())["levels"]


def differences(backend: str, measured: dict[str, dict[str, str]]) -> list[str]:
    expected = load_expected().get(backend, {})
    problems = []
    for level in sorted(set(expected) | set(measured)):
        for column in COLUMNS:
            want, got = expected.get(level, {}).get(column), measured.get(level, {}).get(column)
            if want != got:
                problems.append(f"{backend} {level} {COLUMNS[column]}: expected {want}, measured {got}")
    return problems


def table(results: dict[str, dict[str, Any]]) -> str:
    header = "| backend | level | " + " | ".join(COLUMNS.values()) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for backend, result in results.items():
        for level, cells in result["levels"].items():
            lines.append(f"| {result['server']} | {level} | " + " | ".join(cells[c] for c in COLUMNS) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m scenarios.isolation", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", default="sqlite", help="sqlite, postgresql, mariadb or all (default: sqlite)")
    parser.add_argument("--details", action="store_true", help="print what each probe saw, cell by cell")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    backends = list(databases.BACKENDS) if args.db == "all" else [args.db]
    if any(b not in databases.BACKENDS for b in backends):
        print(f"unknown DB {args.db}; choose one of: {', '.join(databases.BACKENDS)}, all", file=sys.stderr)
        return 2
    results: dict[str, dict[str, Any]] = {}
    problems: list[str] = []
    for backend in backends:
        workdir = Path(tempfile.mkdtemp(prefix=f"lab-isolation-{backend}-"))
        url = ""
        try:
            url = databases.private_database(backend, "lab_isolation", workdir)
            results[backend] = probe_backend(backend, url)
        except databases.BackendUnavailable as error:
            print(error, file=sys.stderr)
            return 2
        finally:
            if url:
                databases.drop_database(url)
            shutil.rmtree(workdir, ignore_errors=True)
        problems += differences(backend, results[backend]["levels"])
    print(table(results))
    print("\ncells: seen / not seen / blocked (the writer waited for the reader's transaction to end); "
          "lost / refused / kept; old / new (the loaded object's attribute after the re-query)")
    if args.details or problems:  # a difference is explained by what each probe saw
        for backend, result in results.items():
            for level, details in result["details"].items():
                print(f"\n{result['server']} {level} (runs as {details['level']}):")
                for column in COLUMNS:
                    print(f"  {COLUMNS[column]:<22} {details[column]}")
    if problems:
        print(f"\nNOT AS EXPECTED ({EXPECTED_FILE.name}):\n  " + "\n  ".join(problems))
        return 1
    print(f"\nas expected ({EXPECTED_FILE.relative_to(REPO_ROOT)})")
    return 0
