"""The causes the doctor names: the lab's own names, with the cure and where the lab shows each.

A finding carries one of these names; `flask stale-doctor report` prints the cure and the
lab's `make <cause>` target and notebook beside it, so the reader can watch the bug happen on
an app they did not write, then fix their own.
"""

from __future__ import annotations

from dataclasses import dataclass

LAB_URL = "https://github.com/stale-data-lab/flask-sqlalchemy-stale-data-lab"


@dataclass(frozen=True)
class CauseInfo:
    name: str
    title: str  # what the doctor saw, in a few words
    cure: str

    @property
    def make_target(self) -> str:
        return f"make {self.name}"

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.name}.ipynb"


CAUSES: dict[str, CauseInfo] = {c.name: c for c in (
    CauseInfo("global_cache", "ORM objects loaded by one request are still used by later ones",
              "keep no ORM object beyond its request: build plain dicts per request; if a page must be "
              "cached, cache plain data in a shared store and invalidate it when the edit commits"),
    CauseInfo("shared_session", "one Session serves several requests",
              "one Session per request, removed at its end (Flask-SQLAlchemy's db.session, or "
              "scoped_session + teardown_appcontext calling remove())"),
    CauseInfo("uncommitted", "a request's changes were rolled back when its session ended",
              "commit() when the change succeeded, rollback() when it failed; flush() is not commit()"),
    CauseInfo("scoped_session_not_removed", "a thread-local scoped_session is never removed",
              "@app.teardown_appcontext calling db_session.remove(), or Flask-SQLAlchemy's db.session"),
    CauseInfo("scoped_session_wrong_scope", "a scoped_session keyed coarser than the request",
              "scope the session to the request (Flask-SQLAlchemy's db.session, removed at teardown); "
              "keep per-user state in the database or the Flask session, not in a Session"),
    CauseInfo("pool_across_fork", "a pooled connection made in one process is used in another",
              "touch no database before the fork (no queries at import or app creation); if you must, "
              "call engine.dispose(close=False) in each child (or in gunicorn's post_fork)"),
    CauseInfo("long_transaction", "a transaction lives longer than its request",
              "end the transaction with the request; REPEATABLE READ and SQLite snapshots are harmless "
              "when the transaction lasts one request"),
    CauseInfo("background_app_context", "a job's app context keeps its session and transaction open",
              "push a new app context (so a new session and a short transaction) per job, or wrap each "
              "job in doctor.job() and commit/remove the session at its end"),
    CauseInfo("http_cache", "a page that reads changing tables is served from a cache",
              "do not cache pages that change with every edit; if one must be cached, delete the entries "
              "an edit affects when it commits (the headers a browser obeys are browser_cache's)"),
    CauseInfo("offset_pagination", "pages numbered with OFFSET move under concurrent writes",
              "keyset pagination: the next page starts strictly after the last row shown"),
    CauseInfo("lost_update", "an UPDATE overwrites a row without checking what the user saw",
              "optimistic locking: UPDATE ... WHERE id = ? AND version = <seen version> (or the mapper's "
              "version_id_col); 0 rows means someone else changed it: answer 409"),
    CauseInfo("import_time", "a value computed once, at import or app creation, is served for ever",
              "read what a page shows inside the request that shows it (no queries at import or in create_app); "
              "give column defaults as callables (`default=utc_now`, not `default=datetime.now(...)`) or "
              "`server_default=func.now()`"),
    CauseInfo("identity_map", "a locking read returned an object loaded before the lock, and the request wrote from it",
              "populate_existing on the locking read (select(...).with_for_update().execution_options("
              "populate_existing=True)), or session.expire(obj) before it, so the row the lock returned "
              "overwrites the object"),
    CauseInfo("sqlite_file_replaced", "a pooled SQLite connection reads a file no longer at its path",
              "compare the file's identity (st_dev, st_ino) with the one each connection opened on every "
              "checkout and raise sqlalchemy.exc.InvalidatePoolError when they differ (or dispose the "
              "engine after a restore); restore through SQLite's backup API into the live database"),
    CauseInfo("session_cookie_snapshot", "values loaded from the database are kept in the cookie session",
              "keep only ids (what the user chose) in Flask's cookie session and read the values they stand for "
              "from the database on each request; a value that must be cached there needs a version checked "
              "against the database"),
    CauseInfo("replica_lag", "a read on a streaming replica that has not replayed the client's own commit",
              "read-your-writes: after a commit, give the client the primary's write position "
              "(PostgreSQL: pg_current_wal_lsn(); MariaDB: @@gtid_binlog_pos) and make its next read wait, "
              "bounded, until the replica has applied it (pg_last_wal_replay_lsn(); MASTER_GTID_WAIT()), "
              "or read from the primary; route with Session.get_bind"),
    CauseInfo("enqueue_before_commit", "a background task is sent before the transaction that wrote its rows commits",
              "send the task after commit() (or from an after-commit hook), so the worker's own transaction "
              "can see the change it is asked to process"),
    CauseInfo("browser_cache", "a response built from changing tables lets the browser reuse it",
              "send Cache-Control: no-store (or no-cache, with no validator or one derived from the rows' "
              "versions) on dynamic data, never max-age, s-maxage, public or Expires; a 304 only when "
              "nothing the response read has changed since its validator was issued"),
    CauseInfo("prefork_refresher", "a thread started before the fork (a cache refresher) does not run in the workers",
              "start the thread in the process that serves, after the fork: lazily per process id at the first "
              "request, `os.register_at_fork(after_in_child=...)` or gunicorn's `post_fork` hook; or keep the "
              "data in a store every worker reads (the database, Redis)"),
    CauseInfo("cache_key_mismatch", "an edit deleted cache keys, but a later read was answered from another key "
              "holding the edited row as it was before",
              "build the read's key and the invalidation's key the same way: one key function (or the same "
              "memoized function called with arguments of the same types and values: 7 and '7' are two keys), "
              "or put a version in the key that the edit bumps"),
)}
