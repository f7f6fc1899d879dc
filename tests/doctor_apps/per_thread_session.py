"""A Session kept per thread in a `threading.local` (not a scoped_session).

Bug (kept=True): the kept Session is never committed nor closed, so its transaction, begun in one
request, stays open across requests (long_transaction).
Clean (kept=False): a Session per request, closed at teardown.
"""

from __future__ import annotations

import threading

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from .common import Thing, make_engine, session_per_request

_local = threading.local()


def create_app(db_path: str, *, kept: bool = True) -> Flask:
    app = Flask(__name__)
    engine = make_engine(db_path)
    _local.__dict__.clear()

    per_request = session_per_request(app, engine)

    def session() -> Session:
        if not kept:
            return per_request()
        if not hasattr(_local, "session"):
            _local.session = Session(engine)
        return _local.session  # type: ignore[no-any-return]

    @app.get("/things")
    def things() -> dict[str, list[str]]:
        return {"things": [t.name for t in session().scalars(select(Thing))]}

    app.extensions["session_getter"] = session
    app.extensions["thread_local"] = _local
    return app
