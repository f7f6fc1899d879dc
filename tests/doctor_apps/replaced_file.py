"""An app on a SQLite file that a sync tool or a restore replaces by renaming a copy over it.

Bug: the pool keeps its connections, which read the old file (sqlite_file_replaced). Clean: a
checkout listener compares the file each connection opened with the file at the path now and
raises InvalidatePoolError when they differ, so the pool reconnects (`watch_file=True`).
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
