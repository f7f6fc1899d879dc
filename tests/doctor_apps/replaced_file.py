"""An app on a SQLite file that a sync tool or a restore replaces by renaming a copy over it.

Bug: the pool keeps its connections, which read the old file (sqlite_file_replaced). Clean: a
checkout listener compares the file each connection opened with the file at the path now and
raises InvalidatePoolError when they differ, so the pool reconnects (`watch_file=True`).

`create_held_app` is the other shape: one connection opened at start-up (in autocommit, so every
read sees the latest commit of its file) that every request reads through and nothing returns to
the pool, so it is never checked out again; the app reads through it before the doctor is
installed. A module-global Session holding its transaction keeps its connection the same way.
"""

from __future__ import annotations

import os
import sqlite3
from typing import Any

from flask import Flask
from sqlalchemy import event, exc, select
from sqlalchemy.orm import sessionmaker

from .common import Thing, make_engine


def create_app(db_path: str, *, watch_file: bool) -> Flask:
    app = Flask(__name__)
    engine = make_engine(db_path)
    if watch_file:
        @event.listens_for(engine, "connect")
        def remember(_dbapi: Any, record: Any) -> None:
            record.info["inode"] = os.stat(db_path).st_ino

        @event.listens_for(engine, "checkout")
        def same_file(_dbapi: Any, record: Any, _proxy: Any) -> None:
            if os.stat(db_path).st_ino != record.info["inode"]:
                raise exc.InvalidatePoolError(f"{db_path} was replaced")

    Session = sessionmaker(bind=engine)
    app.extensions["engine"], app.extensions["sessionmaker"] = engine, Session

    @app.get("/things")
    def things() -> dict[str, list[str]]:
        with Session() as session:
            return {"things": [t.name for t in session.scalars(select(Thing).order_by(Thing.id))]}

    return app


def replace(db_path: str, name: str) -> None:
    """What a sync tool does: a copy (SQLite's backup API), changed, renamed over the file."""
    temporary = db_path + ".syncing"
    live, copy = sqlite3.connect(db_path), sqlite3.connect(temporary)
    live.backup(copy)
    copy.execute("UPDATE things SET name = ? WHERE id = 1", (name,))
    copy.commit()
    copy.close()
    live.close()
    os.replace(temporary, db_path)


def create_held_app(db_path: str) -> Flask:
    app = Flask(__name__)
    engine = make_engine(db_path)
    connection = engine.connect().execution_options(isolation_level="AUTOCOMMIT")
    connection.execute(select(Thing.name)).all()  # at start-up, before any doctor: checked out for good
    app.extensions["engine"] = engine

    @app.get("/things")
    def things() -> dict[str, list[str]]:
        return {"things": list(connection.scalars(select(Thing.name).order_by(Thing.id)))}

    return app
