"""MLflow (`pip install mlflow[auth]`): the tracking server of an ML team, with its basic-auth app.

Shape: Flask 3 with plain SQLAlchemy 2 and no Flask-SQLAlchemy: its tracking store
(`SqlAlchemyStore`) makes a `sessionmaker` of its own and opens one session per store call
(`ManagedSessionMaker`, committed and closed when the call ends), so no session outlives a call
and none is scoped to a request; a JSON REST API (`/api/2.0/mlflow/...`) behind HTTP basic auth
(the `basic-auth` app, whose users live in a SQLite store of their own); experiment and run
searches paged by an opaque page token; served by gunicorn with workers as
`mlflow server --app-name basic-auth --gunicorn-opts ...` serves it. On MariaDB (also
PostgreSQL, SQLite).

What an operator does, and this driver does the same: the environment `mlflow server` gives
its workers (`_MLFLOW_SERVER_FILE_STORE` for the backend store, `_MLFLOW_SERVER_ARTIFACT_ROOT`),
the basic-auth config file (`MLFLOW_AUTH_CONFIG_PATH`) with the admin's password, the admin
bootstrapped and the schema migrated once before any worker starts (as `mlflow server` does
before it spawns them); the team's experiments logged through the API, as `mlflow` clients do;
then the admin signs a newcomer up, and a member of the team logs in with her password and uses
the UI's calls.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from field.runtime.driver import Driver as Base
from field.runtime.flow import Client, Page, Step

EXPERIMENTS = 25
LIMIT = 10
ADMIN, ADMIN_PASSWORD = "admin", "field-admin-password-1"
USER, USER_PASSWORD = "alice", "field-alice-password-1"  # the team's member who logged the experiments
NEWCOMER, NEWCOMER_PASSWORD = "bob", "field-bob-password-12"  # signed up in the flow
API = "/api/2.0/mlflow"


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


class Driver(Base):
    name = "mlflow"
    distribution = "mlflow"
    package = "mlflow"
    backends = ("mariadb", "postgresql", "sqlite")
    read_step = "list the experiments"
    read_path = f"{API}/experiments/search?max_results={LIMIT}"
    write_step = "rename an experiment"

    _auth: dict[str, str] = {}
    _created: str | None = None
    _run: str | None = None
    _opened = threading.local()  # the sessions session() opened in this thread, closed by release()

    def store_uri(self) -> str:
        return self.backend.url or f"sqlite:///{self.workdir / 'mlflow.db'}"

    def sqlite_path(self) -> Path | None:
        return self.workdir / "mlflow.db" if self.backend.url is None else None

    # ---- installation as an operator does it --------------------------------------------

    def _environment(self) -> dict[str, str]:
        w = self.workdir
        return {"_MLFLOW_SERVER_FILE_STORE": self.store_uri(), "_MLFLOW_SERVER_ARTIFACT_ROOT": str(w / "artifacts"),
                "MLFLOW_AUTH_CONFIG_PATH": str(w / "basic_auth.ini"),
                "MLFLOW_FLASK_SERVER_SECRET_KEY": "field-run-secret-key-not-for-production-use",
                "MLFLOW_TRACKING_URI": self.store_uri(), "MLFLOW_DISABLE_TELEMETRY": "true",
                "DO_NOT_TRACK": "true"}

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "artifacts").mkdir(exist_ok=True)
        (self.workdir / "basic_auth.ini").write_text(
            "[mlflow]\ndefault_permission = READ\n"
            f"database_uri = sqlite:///{self.workdir / 'basic_auth.db'}\n"
            f"admin_username = {ADMIN}\nadmin_password = {ADMIN_PASSWORD}\n"
            "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n")
        os.environ.update(self._environment())
        # What `mlflow server --app-name basic-auth` does before its workers start, then the team's data.
        done = subprocess.run([sys.executable, "-c", "from field.apps.mlflow.driver import bootstrap; bootstrap()"],
                              capture_output=True, text=True, env={**os.environ, "FIELD_WORKDIR": str(self.workdir)})
        if done.returncode != 0:
            raise RuntimeError(f"mlflow's bootstrap failed: {(done.stderr or done.stdout)[-1500:]}")

    def build(self) -> Any:
        from mlflow.server.auth import create_app

        return create_app()

    def _store(self) -> Any:
        from mlflow.server.handlers import _get_tracking_store

        return _get_tracking_store()

    def sessions(self, app: Any) -> Any:
        from sqlalchemy.orm import sessionmaker

        return sessionmaker(bind=self._store().engine)  # the store's own is local to its __init__: same engine

    def registries(self, app: Any) -> list[Any]:
        return []  # a session per store call, none kept in a registry

    def session(self, app: Any) -> Any:
        session = self.sessions(app)()
        self._opened.__dict__.setdefault("sessions", []).append(session)
        return session

    def release(self, app: Any) -> None:
        for session in self._opened.__dict__.pop("sessions", []):
            session.close()

    def model_class(self, app: Any) -> type:
        from mlflow.store.tracking.dbmodels.models import SqlExperiment

        return SqlExperiment

    # ---- a person's use -------------------------------------------------------------------------

    def _sign_up(self, client: Client) -> Page:
        return client.post(f"{API}/users/create", json_body={"username": NEWCOMER, "password": NEWCOMER_PASSWORD},
                           headers=basic(ADMIN, ADMIN_PASSWORD))

    def login(self, client: Client) -> Page:
        """Basic auth: the browser sends her password with each call; the UI's first call checks it."""
        self._auth = basic(USER, USER_PASSWORD)
        return client.get(f"{API}/users/current", headers=self._auth)

    def _get(self, path: str) -> Any:
        return lambda client: client.get(path, headers=self._auth)

    def _post(self, path: str, body: Any) -> Any:
        return lambda client: client.post(path, json_body=body() if callable(body) else body, headers=self._auth)

    def _next_page(self, client: Client) -> Page:
        first = client.get(self.read_path, headers=self._auth)
        token = first.json().get("next_page_token") if first.status == 200 else None
        if not token:
            raise RuntimeError(f"the first page gave no next_page_token ({first.status})")
        return client.get(f"{self.read_path}&page_token={token}", headers=self._auth)

    def _create_experiment(self, client: Client) -> Page:
        page = client.post(f"{API}/experiments/create", json_body={"name": "alice's new experiment"},
                           headers=self._auth)
        if page.status == 200:
            self._created = page.json()["experiment_id"]
        return page

    def _create_run(self, client: Client) -> Page:
        page = client.post(f"{API}/runs/create", json_body={"experiment_id": self._created, "run_name": "first try"},
                           headers=self._auth)
        if page.status == 200:
            self._run = page.json()["run"]["info"]["run_id"]
        return page

    def flow(self) -> list[Step]:
        seed = self.seed()
        experiment, renamed = seed["experiments"][4], seed["experiments"][2]
        return [
            Step("sign up a newcomer (the admin creates his account)", self._sign_up),
            Step("log in as alice", self.login),
            Step("list the experiments", self._get(self.read_path)),
            Step("open page 2 of the experiment list", self._next_page),
            Step("search experiments by name", self._get(f"{API}/experiments/search?max_results={LIMIT}"
                                                         f"&filter=name%20LIKE%20%27%25%2007%27")),
            Step("open an experiment", self._get(f"{API}/experiments/get?experiment_id={experiment}")),
            Step("create an experiment", self._create_experiment),
            Step("log a run in it", self._create_run),
            Step("log a metric", self._post(f"{API}/runs/log-metric", lambda: {
                "run_id": self._run, "key": "loss", "value": 0.25, "timestamp": 1, "step": 0})),
            Step("search its runs", self._post(f"{API}/runs/search", lambda: {
                "experiment_ids": [self._created], "max_results": LIMIT})),
            Step("rename an experiment", self._post(f"{API}/experiments/update", {
                "experiment_id": renamed, "new_name": "alice's renamed experiment"})),
            Step("open the renamed experiment", self._get(f"{API}/experiments/get?experiment_id={renamed}")),
            Step("end the run", self._post(f"{API}/runs/update", lambda: {"run_id": self._run, "status": "FINISHED"})),
            Step("delete the run", self._post(f"{API}/runs/delete", lambda: {"run_id": self._run})),
            Step("delete the experiment", self._post(f"{API}/experiments/delete",
                                                     lambda: {"experiment_id": self._created})),
            Step("list the experiments, again", self._get(self.read_path)),
        ]


def bootstrap() -> None:
    """Before any worker: the admin user and the tracking schema (as `mlflow server` makes them),
    then a member of the team and her experiments, logged through the API as its clients do."""
    from mlflow.server import _bootstrap_basic_auth
    from mlflow.server.handlers import _get_tracking_store

    _bootstrap_basic_auth()
    _get_tracking_store().engine.dispose()  # creating the store migrates the schema once
    workdir = Path(os.environ["FIELD_WORKDIR"])
    from mlflow.server.auth import create_app

    client = create_app().test_client()
    response = client.post(f"{API}/users/create", json={"username": USER, "password": USER_PASSWORD},
                           headers=basic(ADMIN, ADMIN_PASSWORD))
    assert response.status_code == 200, response.get_data(as_text=True)[:500]
    alice = basic(USER, USER_PASSWORD)  # she logged them: she may manage them
    experiments = []
    for i in range(1, EXPERIMENTS + 1):
        response = client.post(f"{API}/experiments/create", json={"name": f"experiment {i:02d}"}, headers=alice)
        assert response.status_code == 200, response.get_data(as_text=True)[:500]
        experiments.append(response.get_json()["experiment_id"])
    Driver(workdir, None).seed_file.write_text(json.dumps({"experiments": experiments}))  # type: ignore[arg-type]
