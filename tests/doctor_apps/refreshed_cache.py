"""An app that keeps a table's names in memory, refreshed by a background thread.

Bug: the refresher is started in create_app, so a process forked after it (a preloaded
gunicorn's workers) serves the copy it was forked with (prefork_refresher). Clean: the route
starts the refresher in the process that serves it, once per process id.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .common import Thing, make_engine

THREAD_NAME = "things-refresher"


class Cache:
    def __init__(self, engine: Any, interval: float) -> None:
        self.engine, self.interval, self.names, self.pid = engine, interval, [], 0
        self.stop = threading.Event()

    def refresh(self) -> None:
        with Session(self.engine) as session:
            self.names = [t.name for t in session.scalars(select(Thing))]

    def loop(self, first: threading.Event) -> None:
        self.refresh()  # in the thread: a request only reads the copy (no SQL of its own)
        first.set()
        while not self.stop.wait(self.interval):
            self.refresh()

    def start(self) -> None:
        self.pid, first = os.getpid(), threading.Event()
        threading.Thread(target=self.loop, args=(first,), name=THREAD_NAME, daemon=True).start()
        first.wait(5)


def create_app(db_path: str, buggy: bool) -> Flask:
    app = Flask(__name__)
    engine = make_engine(db_path)
    app.extensions["engine"], app.extensions["sessionmaker"] = engine, sessionmaker(bind=engine)
    # The refresher's own engine without a pool: no pooled connection crosses a fork (pool_across_fork).
    cache = app.extensions["cache"] = Cache(create_engine(f"sqlite:///{db_path}", poolclass=NullPool), interval=0.05)
    if buggy:
        cache.start()

    @app.get("/names")
    def names() -> dict[str, list[str]]:
        if not buggy and cache.pid != os.getpid():
            cache.start()
        return {"names": cache.names}

    return app
