"""What the field needs to know of an app, and nothing it may not: the driver protocol.

A driver (`field/apps/<app>/driver.py`, class `Driver`) says how a person installs and uses one
app: where its data lives, how its own factory builds it, which object holds its sessions (the
`db` the doctor is given), and the steps of its flow. It never edits the app's files; it may
set the app's documented configuration (environment, config file, CLI) as an operator would.

For the injections (`inject.py`) a driver also names, among its steps, a `read` step (a page
showing rows, and its URL) and a `write` step (an edit, committed, of rows that page shows),
and the mapped class of those rows; where the app has them, a step its data cache serves
(`cached_read_step`) and its task queue (`enqueue`). The doctor is given none of this: it sees only the app.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .flow import Client, Page, Step


@dataclass
class Backend:
    """The database an app runs on in this run: `sqlite` (a file in the work folder) or a server URL."""

    name: str  # "sqlite" | "postgresql" | "mariadb"
    url: str | None  # None for sqlite: the driver picks the file under its work folder


class Driver:
    name: str = ""  # the app's name in the corpus (its folder under field/apps/)
    distribution: str = ""  # the registry package (`pip install <distribution>`)
    package: str = ""  # its top-level import package: the doctor's STALE_DOCTOR_APP_PACKAGES
    backends: tuple[str, ...] = ("sqlite",)
    read_step: str = ""  # a step whose page shows rows of `model`
    read_path: str = ""  # the URL that step opens (the injections find its view in the app's url_map)
    write_step: str = ""  # a step that edits and commits rows the read step shows
    cached_read_step: str = ""  # a step whose page the app's data cache serves, for a row the write step edits

    def __init__(self, workdir: Path, backend: Backend) -> None:
        self.workdir = workdir
        self.backend = backend

    @property
    def seed_file(self) -> Path:
        """Where `prepare` writes the ids of the data it made for the flow (a driver that seeds through the API)."""
        return self.workdir / "seed.json"

    def seed(self) -> dict[str, Any]:
        return json.loads(self.seed_file.read_text())  # type: ignore[no-any-return]

    # ---- installation as an operator does it --------------------------------------------

    def prepare(self) -> None:
        """Data folders, configuration, schema and the first user, before the app is built."""

    def close(self) -> None:
        """Stop what `prepare` started for the run (a server of its own), whatever happened."""

    def build(self) -> Any:
        """The Flask app, as the app's own factory or module returns it."""
        raise NotImplementedError

    def sessions(self, app: Any) -> Any:
        """The `db` for StaleDoctor: the app's Flask-SQLAlchemy object or its scoped_session."""
        raise NotImplementedError

    def registries(self, app: Any) -> list[Any]:
        """The app's scoped_session registries (the session-scope injections swap theirs); by default
        Flask-SQLAlchemy's `db.session` when `sessions()` is a Flask-SQLAlchemy object."""
        db = self.sessions(app)
        return [db.session] if type(db).__module__.split(".")[0] == "flask_sqlalchemy" else []

    def session(self, app: Any) -> Any:
        """In an app context: the Session the read and write steps use for `model_class` rows."""
        return self.sessions(app).session()

    def release(self, app: Any) -> None:
        """In an app context: end what `session()` began, as the app's own teardown does."""
        self.sessions(app).session.remove()

    def model_class(self, app: Any) -> type:
        """The mapped class of the rows the read step shows and the write step edits."""
        raise NotImplementedError

    def sqlite_path(self) -> Path | None:
        """The SQLite file the app reads, when it runs on SQLite."""
        return None

    # ---- a person's use ---------------------------------------------------------------------

    def flow(self) -> list[Step]:
        """The clean flow: sign up or log in, list, open, create, edit, delete, search, paginate."""
        raise NotImplementedError

    def step(self, name: str) -> Step:
        for step in self.flow():
            if step.name == name:
                return step
        raise KeyError(f"{self.name}: no step {name!r}")

    def login(self, client: Client) -> Page:
        """Log the person in: the clean flow's first step, and the start of every injection's."""
        raise NotImplementedError

    def enqueue(self, app: Any, func: str, *args: Any) -> None:
        """In an app context: send one job through the app's own task queue, as its code does (a
        function named by its import path). An app that has no queue keeps this default."""
        raise NotImplementedError

    def job(self, app: Any) -> None:
        """One unit of the app's background work or CLI, run in the current app context."""
        raise NotImplementedError
