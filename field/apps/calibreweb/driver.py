"""calibre-web (`pip install calibreweb`): an e-book library served from a Calibre library folder.

Shape: Flask 3 with plain SQLAlchemy 2 and no Flask-SQLAlchemy. Its users, shelves and
settings live in `app.db` behind one module-global Session (`cps.ub.session`, made once by
`ub.init_db` and used by every request); the books live in the Calibre library's
`metadata.db`, read through a new engine and `scoped_session` per app context
(`cps.calibre_db.session`, closed at teardown). Flask-Login, Flask-WTF forms with CSRF tokens.

What an operator does, and this driver does the same: a library folder (`metadata.db`, made
here from calibre-web's own models, as Calibre would), `-p <settings db>` on the command line,
`create_app()` and the blueprints its `main()` registers (main() then starts its own server,
which the field replaces with the test client or gunicorn); a person logs in as the default
admin, points it at the library on the first run, and uses it.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path
from typing import Any

from field.runtime.driver import Driver as Base
from field.runtime.flow import Client, Page, Step

BOOKS = 30
CALIBRE_BOOKS_DDL = """CREATE TABLE books (id INTEGER PRIMARY KEY AUTOINCREMENT,
    title TEXT NOT NULL DEFAULT 'Unknown' COLLATE NOCASE, sort TEXT COLLATE NOCASE,
    timestamp TIMESTAMP DEFAULT CURRENT_TIMESTAMP, pubdate TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
    series_index REAL NOT NULL DEFAULT 1.0, author_sort TEXT COLLATE NOCASE,
    isbn TEXT DEFAULT '' COLLATE NOCASE, lccn TEXT DEFAULT '' COLLATE NOCASE, path TEXT NOT NULL DEFAULT '',
    flags INTEGER NOT NULL DEFAULT 1, uuid TEXT, has_cover BOOL DEFAULT 0,
    last_modified TIMESTAMP NOT NULL DEFAULT '2000-01-01 00:00:00+00:00')"""


class Driver(Base):
    name = "calibreweb"
    distribution = "calibreweb"
    package = "cps"
    read_step = "open the book list"
    read_path = "/"
    write_step = "edit a book's title"

    @property
    def config_dir(self) -> Path:
        return self.workdir / "config"

    @property
    def library(self) -> Path:
        return self.workdir / "library"

    def _importable(self) -> None:
        import calibreweb  # the distribution's package; `cps` sits inside it, as its __main__ arranges

        path = os.path.dirname(calibreweb.__file__)
        if path not in sys.path:
            sys.path.insert(0, path)
        sys.argv = ["cps", "-p", str(self.config_dir / "app.db")]  # calibre-web reads its CLI in create_app

    def prepare(self) -> None:
        self.config_dir.mkdir(parents=True, exist_ok=True)
        self.library.mkdir(parents=True, exist_ok=True)
        os.environ["CALIBRE_DBPATH"] = str(self.config_dir)
        self._importable()
        from sqlalchemy import create_engine, text

        from cps import db as calibre_models

        # A Calibre library as Calibre makes it: calibre-web's own models, `calibre.` schema mapped to the file.
        engine = create_engine(f"sqlite:///{self.library / 'metadata.db'}").execution_options(
            schema_translate_map={"calibre": None})
        with engine.begin() as conn:  # Calibre's own `books` table (series_index REAL, as calibre-web expects)
            conn.execute(text(CALIBRE_BOOKS_DDL))
        calibre_models.Base.metadata.create_all(engine)  # the other tables, from calibre-web's models
        with engine.begin() as conn:
            conn.execute(text("INSERT INTO library_id(uuid) VALUES (:u)"), {"u": str(uuid.uuid4())})
            conn.execute(text("INSERT INTO authors(id, name, sort, link) VALUES (1, 'Jane Doe', 'Doe, Jane', '')"))
            for i in range(1, BOOKS + 1):
                conn.execute(text(
                    "INSERT INTO books(id, title, sort, author_sort, timestamp, pubdate, series_index, last_modified, "
                    "path, has_cover, uuid) VALUES (:i, :t, :t, 'Doe, Jane', '2024-01-01', '2024-01-01', 1, "
                    "'2024-01-01', :p, 0, :u)"), {"i": i, "t": f"Book number {i}", "p": f"Jane Doe/Book {i} ({i})",
                                                   "u": str(uuid.uuid4())})
                conn.execute(text("INSERT INTO books_authors_link(book, author) VALUES (:i, 1)"), {"i": i})
        engine.dispose()

    def build(self) -> Any:
        self._importable()
        from cps import create_app

        app = create_app()
        from cps.about import about
        from cps.admin import admi
        from cps.basic import basic
        from cps.editbooks import editbook
        from cps.error_handler import init_errorhandler
        from cps.gdrive import gdrive
        from cps.jinjia import jinjia
        from cps.opds import opds
        from cps.remotelogin import remotelogin
        from cps.search import search
        from cps.search_metadata import meta
        from cps.shelf import shelf
        from cps.tasks_status import tasks
        from cps.web import web

        init_errorhandler()
        for blueprint in (search, tasks, web, basic, opds, jinjia, about, shelf, admi, remotelogin, meta, gdrive,
                          editbook):
            app.register_blueprint(blueprint)  # what cps.main.main() registers before it serves
        return app

    def sessions(self, app: Any) -> Any:
        from cps import ub

        return ub.session  # the module-global Session of app.db: what its requests use for users and shelves

    def session(self, app: Any) -> Any:
        from cps import calibre_db

        return calibre_db.session  # the library's scoped_session of this app context

    def release(self, app: Any) -> None:
        from cps import calibre_db

        calibre_db.teardown(None)  # what calibre-web's own app-context teardown does

    def model_class(self, app: Any) -> type:
        from cps.db import Books

        return Books

    def sqlite_path(self) -> Path | None:
        return self.config_dir / "app.db"  # the settings database, behind the module-global engine

    # ---- a person's use -------------------------------------------------------------------------

    def _log_in(self, client: Client) -> Page:
        token = client.get("/login").field_value("csrf_token")
        return client.post("/login", data={"username": "admin", "password": "admin123", "csrf_token": token})

    def _configure(self, client: Client) -> Page:
        token = client.get("/admin/dbconfig").field_value("csrf_token")
        return client.post("/admin/ajaxdbconfig", data={"config_calibre_dir": str(self.library), "csrf_token": token})

    def login(self, client: Client) -> Page:
        self._log_in(client)
        return self._configure(client)

    def _edit_title(self, client: Client) -> Page:
        token = client.get("/admin/book/5").field_value("csrf_token")
        return client.post("/admin/book/5", data={
            "csrf_token": token, "title": "Edited title five", "authors": "Jane Doe", "series_index": "1",
            "comments": "", "tags": "", "series": "", "pubdate": "", "publisher": "", "languages": "",
            "rating": "0", "description": "", "cover_url": "", "identifier-type-isbn": "",
            "detail_view": "on"})  # the form's "View Book on Save" box, checked by default

    def _shelf_flow(self, client: Client) -> Page:
        token = client.get("/shelf/create").field_value("csrf_token")
        made = client.post("/shelf/create", data={"title": "My shelf", "csrf_token": token})
        self._shelf = made.headers.get("Location", "").rstrip("/").rsplit("/", 1)[-1] or "1"
        return made

    def _token(self, client: Client) -> str | None:
        return client.get("/me").field_value("csrf_token")

    def flow(self) -> list[Step]:
        return [
            Step("log in as admin", self._log_in),
            Step("first run: point it at the library", self._configure),
            Step("open the book list", lambda c: c.get("/")),
            Step("open page 2 of the list", lambda c: c.get("/page/2")),
            Step("open a book", lambda c: c.get("/book/3")),
            Step("search for a title", lambda c: c.get("/search?query=number+7")),
            Step("list the authors", lambda c: c.get("/author")),
            Step("edit a book's title", self._edit_title),
            Step("open the edited book", lambda c: c.get("/book/5")),
            Step("create a shelf", self._shelf_flow),
            Step("add a book to the shelf", lambda c: c.post(f"/shelf/add/{self._shelf}/3",
                                                             data={"csrf_token": self._token(c)})),
            Step("open the shelf", lambda c: c.get(f"/shelf/{self._shelf}")),
            Step("rename the shelf", lambda c: c.post(f"/shelf/edit/{self._shelf}",
                                                      data={"title": "Renamed shelf", "csrf_token": self._token(c)})),
            Step("delete the shelf", lambda c: c.post(f"/shelf/delete/{self._shelf}",
                                                      data={"csrf_token": self._token(c)})),
            Step("edit one's own profile", lambda c: c.post("/me", data={
                "csrf_token": self._token(c), "email": "admin@example.org", "locale": "en",
                "default_language": "all", "show_2": "on", "show_4": "on"})),
            Step("delete a book", lambda c: c.post("/delete/7", data={"csrf_token": self._token(c)},
                                                   headers={"X-CSRFToken": self._token(c) or ""})),
            Step("log out", lambda c: c.get("/logout")),
        ]
