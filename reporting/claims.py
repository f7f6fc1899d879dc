"""The eleven claims of the client's draft answer, settled by what the lab measures.

One source for the claims_check notebook (which runs the scenarios live) and for the report's
answer to the client (`reports/answer.md`, from the latest stored results): each claim is
split into statements the lab can observe, each statement is read per backend from scenario
cells (their verdicts and observations) or from two in-process measurements (`measure`), and
the claim **holds** when every statement comes out as it says on every backend, **does not
hold** when none does, and **holds in part** otherwise. Each claim carries a corrected wording
that matches every measurement, and the consultant's point that goes with it is kept,
corrected or dropped by that verdict.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

from lab import databases, long_operations, seed
from lab.engine import REPO_ROOT
from lab.results import link_latest, new_run_dir

MEASUREMENTS_DIR = REPO_ROOT / "results" / "claims"

CLAIMS: dict[int, str] = {
    1: "Stale data most often comes from ORM objects kept in a global scope or cache and reused.",
    2: "Sharing one session across HTTP requests is the second most common cause; a session per request, "
       "committed or rolled back and then closed at the end, prevents it.",
    3: "Changes that are never committed cause it.",
    4: "A misconfigured scoped_session shares a session between threads or processes under gunicorn or uwsgi.",
    5: "db.session.remove() detaches the session from the current context, but objects held elsewhere are not updated.",
    6: "db.session.expire_all() makes the next attribute access reload from the database.",
    7: "Calling remove() and expire_all() without recreating the session per request leaves the problem in place.",
    8: "When other functions modify the database the data looks right because they use a new session or end "
       "theirs with commit or rollback, which resets the ORM cache.",
    9: "Other functions may call flush(), which resets all previously cached data.",
    10: "Flask-SQLAlchemy's default scoped session creates and removes a session per request.",
    11: "Long operations inside one session context should be avoided.",
}

# The scenarios each claim reads (run live by the notebook, read from results/ by the report).
SCENARIOS: dict[int, tuple[str, ...]] = {
    1: ("global_cache",), 2: ("shared_session",), 3: ("uncommitted",),
    4: ("scoped_session_wrong_scope", "scoped_session_not_removed", "pool_across_fork"),
    5: ("myth_remove",), 6: ("myth_expire_all",), 7: ("myth_expire_all", "myth_remove"),
    8: ("myth_flush", "myth_expire_all", "myth_remove"), 9: ("myth_flush",), 10: (), 11: ("long_transaction",),
}

HOLDS, IN_PART, DOES_NOT_HOLD = "holds", "holds in part", "does not hold"
# What the consultant does with a point of the draft answer, by its claim's verdict.
ACTION = {HOLDS: "kept", IN_PART: "corrected", DOES_NOT_HOLD: "dropped"}


@dataclass(frozen=True)
class Seen:
    """One scenario cell as a claim reads it: its verdict and the observations behind it."""

    cause: str
    app: str
    backend: str
    verdict: str
    staleness: str
    observations: Mapping[str, Any]

    @classmethod
    def from_result(cls, result: Mapping[str, Any]) -> "Seen":
        """From a stored result.json (the report) or a CellResult's (the notebook)."""
        return cls(result["cause"], result["app"], result["backend"], result["verdict"], result.get("staleness", ""),
                   result.get("observations") or {})


@dataclass
class Statement:
    text: str
    claim_says: bool
    observed: dict[str, bool]  # backend -> what the lab saw

    @property
    def mark(self) -> str:
        agree = [seen == self.claim_says for seen in self.observed.values()]
        return "as claimed" if all(agree) else "not as claimed" if not any(agree) else "depends on the backend"


@dataclass
class Settled:
    number: int
    statements: list[Statement]
    corrected: str
    checked_only: str = ""
    causes: tuple[str, ...] = ()
    claim: str = field(init=False)

    def __post_init__(self) -> None:
        self.claim = CLAIMS[self.number]

    @property
    def verdict(self) -> str:
        agree = [seen == s.claim_says for s in self.statements for seen in s.observed.values()]
        return HOLDS if agree and all(agree) else DOES_NOT_HOLD if not any(agree) else IN_PART

    @property
    def action(self) -> str:
        return ACTION[self.verdict]

    def lines(self) -> list[str]:
        """The claim's verdict, each statement as measured, and the corrected wording."""
        out = [f"Claim {self.number}: {self.verdict.upper()}" + (f" ({self.checked_only})" if self.checked_only else "")]
        for s in self.statements:
            seen = ", ".join(f"{b} {'yes' if v else 'no'}" for b, v in s.observed.items())
            out.append(f"  - {s.text}? the claim says {'yes' if s.claim_says else 'no'}; measured: {seen} ({s.mark})")
        out.append(f"  Corrected: {self.corrected}")
        return out


# ---- what each statement reads ----------------------------------------------------------------

def per_backend(cells: Iterable[Seen], side: str, test: Callable[[Seen], bool]) -> dict[str, bool]:
    """{backend: test(cell)} for one side (broken / fixed / claim / cure) of a scenario's cells."""
    return {cell.backend: bool(test(cell)) for cell in cells if cell.app == side and cell.verdict != "N/A"}


def read_old_version(cell: Seen) -> bool:
    """shared_session: bob's second read, after alice's edit was acknowledged, showed the old version."""
    o = cell.observations
    return o["second"]["version"] < o["ack"]["version"]


def crossed_threads(cell: Seen) -> bool:
    """scoped_session_wrong_scope: alice's two reads on two threads, one connection, one transaction never ended."""
    o = cell.observations
    return (o["first"]["served_by"] != o["second"]["served_by"] and o["first"]["db_conn"] == o["second"]["db_conn"]
            and o["alice_transactions"] == ["BEGIN"])


def shared_with_other_thread(cell: Seen) -> bool:
    """scoped_session_not_removed: did the writer on T2 use T1's connection?"""
    o = cell.observations
    return o["ack"]["db_conn"] == o["first"]["db_conn"]


def kept_across_requests(cell: Seen) -> bool:
    """scoped_session_not_removed: T1's two reads on one connection, one transaction never ended."""
    o = cell.observations
    return o["first"]["db_conn"] == o["second"]["db_conn"] and o["reader_transactions"] == ["BEGIN"]


def workers_on_one_connection(cell: Seen) -> bool:
    """pool_across_fork: both gunicorn workers' reads on one server connection."""
    reads = cell.observations["reads"]
    return len({r["served_by"] for r in reads}) == 2 and len({r["db_conn"] for r in reads}) == 1


def verdict_is(*wanted: str) -> Callable[[Seen], bool]:
    return lambda cell: cell.verdict in wanted


# ---- the in-process measurements of claims 10 and 11 ------------------------------------------

def two_requests(url: str, inside_one_app_context: bool) -> dict[str, Any]:
    """The fixed app, two GET requests through Flask's test client: how many Sessions began a
    transaction, and whether one was still open after them."""
    from sqlalchemy import event
    from sqlalchemy.orm import Session as OrmSession

    from fixed.app import create_app, db

    app = create_app({"SQLALCHEMY_DATABASE_URI": url})
    began: list[OrmSession] = []

    def note_begin(session: OrmSession, _transaction: Any, _connection: Any) -> None:
        began.append(session)  # a reference, so no two sessions can share an id

    event.listen(OrmSession, "after_begin", note_begin)
    try:
        client = app.test_client()
        with app.app_context() if inside_one_app_context else contextlib.nullcontext():
            statuses = [client.get("/api/transactions?limit=1").status_code for _ in range(2)]
            sessions = list({id(s): s for s in began}.values())
            still_open = any(s.in_transaction() for s in sessions)
        return {"statuses": statuses, "sessions": len(sessions), "open_between_requests": still_open}
    finally:
        event.remove(OrmSession, "after_begin", note_begin)
        with app.app_context():
            db.engine.dispose()


def measure(backends: list[str], echo: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Claims 10 and 11's measurements on a private seeded database per backend (dropped after):
    two requests (per request, and inside one app context), a long transaction's row lock
    against a second writer, long sessions against a pool of 2."""
    sqlite_dir = Path(tempfile.mkdtemp(prefix="lab_claims_"))
    urls: dict[str, str] = {}
    measured: dict[str, dict[str, Any]] = {}
    try:
        for backend in backends:
            urls[backend] = databases.private_database(backend, f"lab_claims_{os.getpid()}", sqlite_dir)
            with long_operations.lab_engine(urls[backend]) as engine:
                seed.create_schema(engine)
                seed.seed(engine, 200)
            measured[backend] = {
                "per_request": two_requests(urls[backend], False),
                "inside_one_app_context": two_requests(urls[backend], True),
                "row_lock": long_operations.row_lock_wait(urls[backend], timeout_s=1),
                "pool": long_operations.pool_exhaustion(urls[backend], pool_size=2, pool_timeout=1.0),
            }
            m = measured[backend]
            echo(f"{backend:<11} one app context per request: {m['per_request']}; "
                 f"inside one app context: {m['inside_one_app_context']}")
            echo(f"{backend}: {m['row_lock']['finding']}\n{backend}: {m['pool']['finding']}")
    finally:
        for url in urls.values():
            databases.drop_database(url)
        shutil.rmtree(sqlite_dir, ignore_errors=True)
    return measured


def store_measurements(measured: dict[str, dict[str, Any]], folder: Path = MEASUREMENTS_DIR) -> Path:
    """results/claims/<timestamp>/measurements.json, and the `latest` link to it."""
    started = dt.datetime.now(dt.timezone.utc)
    run_dir = new_run_dir(folder, started)
    (run_dir / "measurements.json").write_text(json.dumps(
        {"kind": "claims", "measured_at": started.isoformat(), "backends": measured}, indent=1, default=str) + "\n")
    link_latest(run_dir)
    return run_dir


def latest_measurements(folder: Path = MEASUREMENTS_DIR) -> dict[str, Any] | None:
    path = folder / "latest" / "measurements.json"
    return json.loads(path.read_text()) if path.exists() else None


# ---- the claims, settled ----------------------------------------------------------------------

def settle_all(cells: Mapping[str, list[Seen]], measured: Mapping[str, Mapping[str, Any]]) -> list[Settled]:
    """Every claim from the cells of the scenarios it reads (by cause) and the measurements (by
    backend). A claim whose scenarios or measurements are missing is left out."""
    def got(*causes: str) -> bool:
        return all(cells.get(cause) for cause in causes)

    settled: list[Settled] = []
    if got("global_cache"):
        c = cells["global_cache"]
        settled.append(Settled(1, [
            Statement("ORM objects kept in a module-level cache and reused serve old data after an acknowledged edit", True,
                      per_backend(c, "broken", lambda x: x.verdict == "STALE" and x.staleness == "orm")),
            Statement("keeping no ORM object between requests shows the edit", True, per_backend(c, "fixed", verdict_is("FRESH"))),
        ], "ORM objects kept beyond their request (a module-level cache, a global, a class attribute) are detached "
           "and keep the values they were loaded with: every worker that holds them serves old data from memory, and "
           "once a commit has expired them they fail with DetachedInstanceError. It is one of several causes; how "
           "often it is the cause cannot be measured here.",
            "the mechanism; 'most often' is not measurable here", SCENARIOS[1]))
    if got("shared_session"):
        c = cells["shared_session"]
        settled.append(Settled(2, [
            Statement("one session shared by all requests serves old data (one request at a time)", True,
                      per_backend(c, "broken", read_old_version)),
            Statement("a session per request, committed or rolled back and closed at its end, shows fresh data and never fails",
                      True, per_backend(c, "fixed", verdict_is("FRESH"))),
        ], "A Session shared across requests keeps one transaction open across them: on SQLite and MariaDB its "
           "snapshot serves old data, on PostgreSQL (READ COMMITTED) reads stay fresh but the connection sits idle in "
           "transaction; under threaded workers it also makes requests fail (a Session is not thread-safe). A session "
           "per request, committed or rolled back and closed at its end (Flask-SQLAlchemy's db.session), prevents all "
           "of it. Whether it is the second most common cause cannot be measured here.",
            "the mechanism and the cure; 'second most common' is not measurable here", SCENARIOS[2]))
    if got("uncommitted"):
        c = cells["uncommitted"]
        settled.append(Settled(3, [
            Statement("an edit acknowledged but never committed leaves every reader, the database included, with the old value",
                      True, per_backend(c, "broken", verdict_is("LOST"))),
            Statement("committing the edit makes every reader see it", True, per_backend(c, "fixed", verdict_is("FRESH"))),
        ], "A change that is flushed but never committed is rolled back when the session closes at the end of the "
           "request: the user was shown the new value (from inside that transaction), and every later reader, the "
           "database included, has the old one. It looks like stale data and is a lost write.", causes=SCENARIOS[3]))
    if got(*SCENARIOS[4]):
        settled.append(Settled(4, [
            Statement("a session scoped by user is shared between threads", True,
                      per_backend(cells["scoped_session_wrong_scope"], "broken", crossed_threads)),
            Statement("a thread-local scoped_session that is never removed is shared between threads", True,
                      per_backend(cells["scoped_session_not_removed"], "broken", shared_with_other_thread)),
            Statement("gunicorn worker processes end up sharing database state (one server connection)", True,
                      per_backend(cells["pool_across_fork"], "broken", workers_on_one_connection)),
        ], "A scoped_session whose scope outlives the request carries one session, with its transaction and "
           "connection, from request to request: with the default thread-local scope and no remove(), across the "
           "requests of one thread (each thread keeps its own, not shared between threads); scoped by anything else "
           "(a user), across threads too. Gunicorn processes never share a Session object (each worker has its own "
           "copy after fork); they can share a pooled database connection opened before the fork (--preload), a "
           "different bug with a different cure (open nothing before the fork, or engine.dispose(close=False)).",
            causes=SCENARIOS[4]))
    if got("myth_remove"):
        c = cells["myth_remove"]
        settled.append(Settled(5, [
            Statement("after remove(), an object held elsewhere still shows the old version", True,
                      per_backend(c, "claim", verdict_is("DOES NOT HOLD"))),
            Statement("after remove(), db.session is a new session (a query through it sees the commit)", True,
                      per_backend(c, "cure", verdict_is("HOLDS"))),
        ], "remove() closes the current session (its transaction rolls back, every object it held is detached) and "
           "discards it, so the next use of db.session gets a new one. Objects held elsewhere keep their old values "
           "(reading them sends no SQL), and those expired before (after any commit) raise DetachedInstanceError.",
            causes=SCENARIOS[5]))
    if got("myth_expire_all"):
        settled.append(Settled(6, [
            Statement("after expire_all(), the next attribute access shows a change committed meanwhile", True,
                      per_backend(cells["myth_expire_all"], "claim", verdict_is("HOLDS"))),
        ], "expire_all() does make the next access run a SELECT, but in the same transaction: it shows a change "
           "committed meanwhile only where each statement gets a new snapshot (PostgreSQL's default READ COMMITTED). "
           "On SQLite, on MariaDB (REPEATABLE READ) and at REPEATABLE READ anywhere, it reloads the old row. To see "
           "other transactions' commits, end the transaction: commit(), rollback() or close().", causes=SCENARIOS[6]))
    if got(*SCENARIOS[7]):
        expire_all, remove = cells["myth_expire_all"], cells["myth_remove"]
        settled.append(Settled(7, [
            Statement("expire_all() in a session that stays open leaves the read stale", True,
                      per_backend(expire_all, "claim", verdict_is("DOES NOT HOLD"))),
            Statement("remove() leaves objects held from before stale", True,
                      per_backend(remove, "claim", verdict_is("DOES NOT HOLD"))),
            Statement("after remove(), a query through db.session is still stale", True,
                      per_backend(remove, "cure", verdict_is("DOES NOT HOLD"))),
        ], "expire_all() does not end the transaction, so in a session that outlives its request it helps only at "
           "READ COMMITTED (PostgreSQL's default), not under a snapshot (SQLite, MariaDB, REPEATABLE READ). remove() "
           "does end the session: whatever is queried after it is fresh, but objects kept from before stay old. With a "
           "session per request and no ORM object kept across requests, neither call is needed.", causes=SCENARIOS[7]))
    if got(*SCENARIOS[8]):
        flush, expire_all, remove = cells["myth_flush"], cells["myth_expire_all"], cells["myth_remove"]
        ended = [per_backend(c, "cure", verdict_is("HOLDS")) for c in (flush, expire_all)]
        settled.append(Settled(8, [
            Statement("ending the transaction with commit() or rollback() makes the next read fresh", True,
                      {b: all(cure.get(b, False) for cure in ended) for b in ended[0]}),
            Statement("a new session sees the commit", True, per_backend(remove, "cure", verdict_is("HOLDS"))),
            Statement("resetting the ORM's copies alone (expire_all, same transaction) makes the next read fresh", True,
                      per_backend(expire_all, "claim", verdict_is("HOLDS"))),
        ], "Ending the transaction is what makes the next read fresh: commit(), rollback(), close() or a new session. "
           "It expires the ORM's objects, and, as important, the next read begins a new transaction whose snapshot "
           "includes what others committed meanwhile. Resetting the ORM's copies alone (expire_all) is not enough "
           "under a snapshot (SQLite, MariaDB).", causes=SCENARIOS[8]))
    if got("myth_flush"):
        settled.append(Settled(9, [
            Statement("after flush(), a held object shows a change committed elsewhere", True,
                      per_backend(cells["myth_flush"], "claim", verdict_is("HOLDS"))),
        ], "flush() only sends the session's pending changes inside the current transaction (with nothing pending it "
           "sends nothing); it expires and reloads nothing. A held object keeps its values on every backend; only "
           "ending the transaction (commit, rollback) or a new session shows other transactions' commits.",
            causes=SCENARIOS[9]))
    if measured:
        ok = {b: m["per_request"]["statuses"] == m["inside_one_app_context"]["statuses"] == [200, 200]
              for b, m in measured.items()}
        settled.append(Settled(10, [
            Statement("two requests get two sessions", True,
                      {b: ok[b] and m["per_request"]["sessions"] == 2 for b, m in measured.items()}),
            Statement("each request's session is removed at its end (no transaction left open)", True,
                      {b: ok[b] and not m["per_request"]["open_between_requests"] for b, m in measured.items()}),
            Statement("two requests inside an app context that is already pushed get two sessions", True,
                      {b: ok[b] and m["inside_one_app_context"]["sessions"] == 2 for b, m in measured.items()}),
        ], "Flask-SQLAlchemy scopes db.session to the app context and removes it (closes it, ending its transaction) "
           "when the app context is torn down. Flask pushes a new app context for a request only when none is active, "
           "so in a web server it is one session per request; inside an app context that is already pushed (a CLI "
           "command, a worker loop, a test wrapping requests in `with app.app_context():`) every request and job "
           "shares one session and its open transaction (see background_app_context)."))
    if got("long_transaction") and measured:
        c = cells["long_transaction"]
        settled.append(Settled(11, [
            Statement("a session kept open across requests serves an old snapshot (PostgreSQL: at REPEATABLE READ, as "
                      "the broken app sets)", True, per_backend(c, "broken", verdict_is("STALE"))),
            Statement("a long transaction makes a second writer of its row wait, then fail on its lock timeout", True,
                      {b: m["row_lock"]["same_row"]["outcome"] == "error"
                       and m["row_lock"]["same_row_after_long_operation_ended"]["outcome"] == "updated"
                       for b, m in measured.items()}),
            Statement("long sessions hold every pooled connection: the next request fails after the pool timeout", True,
                      {b: m["pool"]["request"]["outcome"] == "error" for b, m in measured.items()}),
            Statement("a session per request (short transactions) is fresh", True, per_backend(c, "fixed", verdict_is("FRESH"))),
        ], "Keep each session and transaction as short as one unit of work: one per request, and one per batch in "
           "jobs. A long one reads an old snapshot, holds row locks that make other writers wait and fail, holds a "
           "pooled connection, and (measured in the long_operations notebook) keeps PostgreSQL's VACUUM from removing "
           "dead rows, grows SQLite's WAL file and, if it keeps its objects, memory.", causes=SCENARIOS[11]))
    return settled


def table_markdown(settled: list[Settled], backends: list[str]) -> str:
    """The claims, settled: one row each (the notebook's closing table)."""
    rows = [f"Measured on: {', '.join(backends)}.", "", "| # | claim | verdict | corrected wording |", "|---|---|---|---|"]
    for s in settled:
        verdict = f"**{s.verdict}**" + (f" ({s.checked_only})" if s.checked_only else "")
        rows.append(f"| {s.number} | {s.claim} | {verdict} | {s.corrected} |")
    return "\n".join(rows)


def to_dict(settled: Settled) -> dict[str, Any]:
    return {**asdict(settled), "verdict": settled.verdict, "action": settled.action}
