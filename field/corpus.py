"""The corpus: real, public, maintained Flask + SQLAlchemy apps, installed from the registry.

Each entry names the app's registry distribution, the shape it stands for, the backends it is
run on, and, for each of the lab's causes that cannot be injected into it, why. Its pins are
in `field/apps/<name>/requirements.lock` (made by `python -m field lock`), never in the lab's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

FIELD_ROOT = Path(__file__).resolve().parent
REPO_ROOT = FIELD_ROOT.parent

# The lab's causes (doctor/stale_doctor/causes.py), in the lab's order.
CAUSES = ("global_cache", "shared_session", "uncommitted", "scoped_session_not_removed", "scoped_session_wrong_scope",
          "pool_across_fork", "long_transaction", "background_app_context", "http_cache", "offset_pagination",
          "lost_update", "import_time", "identity_map", "sqlite_file_replaced", "session_cookie_snapshot",
          "replica_lag", "enqueue_before_commit", "browser_cache", "prefork_refresher", "cache_key_mismatch")

# Causes no injection of the harness makes, with why (the same for every app unless it says otherwise).
NOT_INJECTED = {
    "offset_pagination": "not injected: a property of the app's own list pages (OFFSET pages are "
                         "judged on the clean flow)",
    "lost_update": "not injected: a property of the app's own edits (an edit without a version "
                   "check is judged on the clean flow)",
    "identity_map": "needs a locking read (SELECT ... FOR UPDATE) in the app's own write path; "
                    "injecting one would rewrite the app's edit",
    "replica_lag": "the app has one engine and no replica routing; a routing Session would "
                   "replace the app's session class, not inject a bug into it",
}
# Said by the apps that lack a task queue / a data cache (the injections need one to exist).
NO_QUEUE = {"enqueue_before_commit": "the app sends no task to a queue from a request"}
NO_DATA_CACHE = {"cache_key_mismatch": "the app has no data cache of its own whose keys an edit deletes"}


@dataclass(frozen=True)
class App:
    name: str  # folder under field/apps/ and the driver's name
    distribution: str  # `pip install <distribution>` (pinned in its lock)
    shape: str  # what it stands for in the corpus
    backends: tuple[str, ...] = ("sqlite",)
    not_injected: dict[str, str] = field(default_factory=dict)  # cause -> why, beyond NOT_INJECTED
    extras: tuple[str, ...] = ()  # what its operator installs beside it (a database driver), pinned in its lock
    no_gunicorn: str | None = None  # why it is not served by gunicorn, if it cannot be

    @property
    def lock(self) -> Path:
        return FIELD_ROOT / "apps" / self.name / "requirements.lock"

    def why_not(self, cause: str) -> str | None:
        return self.not_injected.get(cause) or NOT_INJECTED.get(cause)


CORPUS: tuple[App, ...] = (
    App("calibreweb", "calibreweb",
        "an e-book library (calibre-web): Flask 3, plain SQLAlchemy 2 with sessions of its own (no "
        "Flask-SQLAlchemy), Flask-Login, forms with CSRF, paginated lists, a background task thread",
        not_injected={**NO_QUEUE, **NO_DATA_CACHE},
        no_gunicorn="it runs its own server (cps.web_server) and stops it when its library is configured on "
                    "the first run, which ends a gunicorn worker (measured: 'Worker failed to boot')"),
    App("privacyidea", "privacyIDEA",
        "a multi-factor authentication server (privacyIDEA): Flask 3, Flask-SQLAlchemy 3 with a session per "
        "app context, a JSON API behind a JWT, paginated token and audit lists, an audit log on an engine and "
        "scoped_session of its own, a periodic task runner; on PostgreSQL (also MariaDB, SQLite), under gunicorn",
        backends=("postgresql", "mariadb", "sqlite"), extras=("psycopg[binary]",),
        not_injected={**NO_QUEUE, **NO_DATA_CACHE}),
    App("zou", "zou",
        "a production tracker's API (Zou, the server of CGWire's Kitsu): Flask 3, Flask-SQLAlchemy 3, a "
        "JSON API behind a JWT, a Flask-Caching memo of database reads in Redis invalidated by its services, "
        "an RQ job queue and its worker, PostgreSQL only, under gunicorn",
        backends=("postgresql",),
        not_injected={
            "sqlite_file_replaced": "the app runs on PostgreSQL only: no client reads a SQLite file"}),
    App("mlflow", "mlflow",
        "an ML tracking server (MLflow): Flask 3, plain SQLAlchemy 2 with a sessionmaker of its own and a "
        "session per store call (no Flask-SQLAlchemy, no scoped_session), a JSON REST API, token-paged "
        "searches, on MariaDB (also PostgreSQL, SQLite), under gunicorn as `mlflow server` runs it",
        backends=("mariadb", "postgresql", "sqlite"), extras=("mlflow[auth]", "pymysql", "psycopg[binary]"),
        not_injected={**NO_QUEUE, **NO_DATA_CACHE}),
)

BY_NAME = {app.name: app for app in CORPUS}
