"""Zou (`pip install zou`): the API server of CGWire's Kitsu, a production tracker for studios.

Shape: Flask 3 with Flask-SQLAlchemy 3 (`zou.app.db`, a session per app context, removed at
teardown), the app factory `zou.app.create_app`, a JSON API behind a JWT, paginated CRUD lists
(sorted by last update, paged with OFFSET), a Flask-Caching memo of database reads in Redis that
its services invalidate, events that the operator's handlers receive through an RQ job queue,
and RQ's worker (`rq worker -c zou.job_settings`, a fork per job). PostgreSQL only.

What an operator does, and this driver does the same: the environment Zou's config reads
(`DB_*`, `KV_*`, `ENABLE_JOB_QUEUE`, `EVENT_HANDLERS_FOLDER`), a Redis of its own (started here
on a free port of 127.0.0.1 and stopped in `close`), then Zou's CLI (`zou init-db`,
`zou init-data`, `zou create-admin`); an event handler in the operator's handlers folder (Kitsu's
documented extension point: `event_map` in `event_handlers/__init__.py`) that writes the edited
asset's description to a file, run by the worker; a project and its assets created
through the API, as the web UI does; a person logs in as the admin and uses the web UI's calls.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from field.runtime.drive import free_port
from field.runtime.driver import Driver as Base
from field.runtime.flow import Client, Page, Step

ASSETS = 25
LIMIT = 10
EMAIL, PASSWORD = "admin@example.com", "field-admin-password-1"

# The operator's event handler: the worker writes what it read of the edited asset to a file.
HANDLER = '''"""Runs in the RQ worker for each asset:update event (ENABLE_JOB_QUEUE on)."""

import json
import os


def handle_event(data):
    from zou.app import app
    from zou.app.services import entities_service

    with app.app_context():
        entity = entities_service.get_entity(data["asset_id"])
    with open(os.environ["FIELD_HANDLER_LOG"], "a") as log:
        log.write(json.dumps({"id": entity["id"], "description": entity["description"]}) + "\\n")
'''
HANDLERS_INIT = "from . import asset_changed\n\nevent_map = {\"asset:update\": asset_changed}\n"



class Driver(Base):
    name = "zou"
    distribution = "zou"
    package = "zou"
    backends = ("postgresql",)
    read_step = "list the assets"
    write_step = "edit an asset's description"
    cached_read_step = "open the edited asset"  # get_full_asset is memoized in Redis; the edit deletes its key

    _auth: dict[str, str] = {}
    _created: str | None = None
    _redis: subprocess.Popen[bytes] | None = None  # the run's own Redis, started by prepare

    @property
    def read_path(self) -> str:  # type: ignore[override]
        return f"/data/entities?project_id={self.seed()['project']}&page=1&limit={LIMIT}"

    # ---- installation as an operator does it --------------------------------------------

    def _environment(self) -> dict[str, str]:
        assert self.backend.url, "zou runs on PostgreSQL only"
        url = make_url(self.backend.url)
        w = self.workdir
        return {"DB_DRIVER": "postgresql+psycopg", "DB_HOST": url.host or "127.0.0.1", "DB_PORT": str(url.port or 5432),
                "DB_USERNAME": url.username or "", "DB_PASSWORD": url.password or "", "DB_DATABASE": url.database or "",
                "DB_POOL_SIZE": "5", "DB_MAX_OVERFLOW": "5",
                "SECRET_KEY": "field-run-secret-key-not-for-production-use",
                "PREVIEW_FOLDER": str(w / "previews"), "TMP_DIR": str(w / "tmp"),
                "ENABLE_JOB_QUEUE": "True", "EVENT_HANDLERS_FOLDER": str(w / "handlers"),
                "FIELD_HANDLER_LOG": str(w / "handled.jsonl"), "MAIL_ENABLED": "False",
                "SENTRY_ENABLED": "False", "PROMETHEUS_METRICS_ENABLED": "False"}

    def _zou(self, *args: str) -> None:
        zou = Path(sys.executable).with_name("zou")
        done = subprocess.run([str(zou), *args], capture_output=True, text=True, env=dict(os.environ), cwd=self.workdir)
        if done.returncode != 0:
            raise RuntimeError(f"zou {' '.join(args)} failed: {(done.stderr or done.stdout)[-1500:]}")

    def _start_redis(self) -> None:
        port = free_port()
        process = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                    "--appendonly", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                   start_new_session=True)
        self._redis = process
        os.environ.update({"KV_HOST": "127.0.0.1", "KV_PORT": str(port)})
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("the run's redis-server did not answer within 10 s")

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        handlers = self.workdir / "handlers" / "event_handlers"
        handlers.mkdir(parents=True, exist_ok=True)
        (handlers / "__init__.py").write_text(HANDLERS_INIT)
        (handlers / "asset_changed.py").write_text(HANDLER)
        os.environ.update(self._environment())
        self._start_redis()
        self._zou("init-db")
        self._zou("init-data")
        self._zou("create-admin", EMAIL, "--password", PASSWORD)
        subprocess.run([sys.executable, "-c", "from field.apps.zou.driver import create_project; create_project()"],
                       check=True, capture_output=True, text=True, env={**os.environ, "FIELD_WORKDIR": str(self.workdir)})

    def close(self) -> None:
        if self._redis is not None and self._redis.poll() is None:
            self._redis.terminate()
            self._redis.wait(timeout=10)

    def build(self) -> Any:
        from zou.app import create_app

        return create_app()

    def sessions(self, app: Any) -> Any:
        from zou.app import db

        return db

    def enqueue(self, app: Any, func: str, *args: Any) -> None:
        from zou.app.stores.queue_store import job_queue  # Zou's RQ queue (ENABLE_JOB_QUEUE), as events.emit uses it

        job_queue.enqueue(func, *args)

    def model_class(self, app: Any) -> type:
        from zou.app.models.entity import Entity

        return Entity

    # ---- a person's use -------------------------------------------------------------------------

    def login(self, client: Client) -> Page:
        page = client.post("/auth/login", json_body={"email": EMAIL, "password": PASSWORD})
        if page.status == 200:
            self._auth = {"Authorization": f"Bearer {page.json()['access_token']}"}
        return page

    def _get(self, path: str) -> Any:
        return lambda client: client.get(path, headers=self._auth)

    def _put(self, path: str, body: dict[str, Any]) -> Any:
        return lambda client: client.request("PUT", path, json_body=body, headers=self._auth)

    def _create_asset(self, client: Client) -> Page:
        seed = self.seed()
        page = client.post(f"/data/projects/{seed['project']}/asset-types/{seed['asset_type']}/assets/new",
                           json_body={"name": "Field new asset", "description": "made in the flow"}, headers=self._auth)
        if page.status in (200, 201):
            self._created = page.json()["id"]
        return page

    def _delete_created(self, client: Client) -> Page:
        return client.request("DELETE", f"/data/assets/{self._created}", headers=self._auth)

    def run_worker(self, client: Client) -> Page:
        """RQ's worker in burst mode, as `rq worker -c zou.job_settings` runs it, with the doctor installed."""
        done = subprocess.run([sys.executable, "-m", "field.apps.zou.worker"], capture_output=True, text=True,
                              env=dict(os.environ), cwd=self.workdir, timeout=120)
        if done.returncode != 0 or not (self.workdir / "handled.jsonl").exists():
            raise RuntimeError(f"the worker ran no event handler: {(done.stderr or done.stdout)[-600:]}")
        return Page(200, done.stdout, {})

    def flow(self) -> list[Step]:
        seed = self.seed()
        project, assets, me = seed["project"], seed["assets"], seed["me"]
        entities = f"/data/entities?project_id={project}"
        return [
            Step("log in as admin", self.login),
            Step("list the projects", self._get("/data/projects")),
            Step("open the project", self._get(f"/data/projects/{project}")),
            Step("list the assets", self._get(self.read_path)),
            Step("open page 2 of the asset list", self._get(f"{entities}&page=2&limit={LIMIT}")),
            Step("filter the assets by name", self._get(f"{entities}&name=Asset%2007")),
            Step("open an asset", self._get(f"/data/assets/{assets[3]}")),
            Step("create an asset", self._create_asset),
            Step("edit an asset's description", self._put(f"/data/entities/{assets[5]}",
                                                          {"description": "edited description five"})),
            Step("open the edited asset", self._get(f"/data/assets/{assets[5]}")),
            Step("the job worker runs the queued events", self.run_worker),
            Step("delete the new asset", self._delete_created),
            Step("rename the project's description", self._put(f"/data/projects/{project}",
                                                               {"description": "a project the field edited"})),
            Step("edit one's own profile", self._put(f"/data/persons/{me}", {"phone": "+33 1 23 45 67 89"})),
            Step("list the people", self._get("/data/persons")),
            Step("open the project's assets", self._get(f"/data/projects/{project}/assets")),
        ]


def create_project() -> None:
    """The project and assets the studio made before the person's visit (through the API, as Kitsu's UI does)."""
    workdir = Path(os.environ["FIELD_WORKDIR"])
    driver = Driver(workdir, None)  # type: ignore[arg-type]
    client = driver.build().test_client()

    def call(method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        response = client.open(path, method=method, json=body, headers=driver._auth)
        assert response.status_code in (200, 201), f"{method} {path}: {response.get_data(as_text=True)[:500]}"
        return response.get_json()

    login = client.post("/auth/login", json={"email": EMAIL, "password": PASSWORD}).get_json()
    driver._auth = {"Authorization": f"Bearer {login['access_token']}"}
    statuses = call("GET", "/data/project-status")
    project = call("POST", "/data/projects", {"name": "Field Short", "production_type": "short",
                                              "project_status_id": next(s["id"] for s in statuses if s["name"] == "Open")})
    asset_type = next(t for t in call("GET", "/data/asset-types") if t["name"] == "Character")
    assets = []
    for i in range(1, ASSETS + 1):
        asset = call("POST", f"/data/projects/{project['id']}/asset-types/{asset_type['id']}/assets/new",
                     {"name": f"Asset {i:02d}", "description": f"asset number {i}"})
        assets.append(asset["id"])
    driver.seed_file.write_text(json.dumps({"project": project["id"], "asset_type": asset_type["id"],
                                            "assets": assets, "me": login["user"]["id"]}))
