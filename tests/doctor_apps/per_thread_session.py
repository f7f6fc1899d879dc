"""A Session kept per thread in a `threading.local` (not a scoped_session).

Bug (kept=True): the kept Session is never committed nor closed, so its transaction, begun in one
request, stays open across requests (long_transaction).
Clean (kept=False): a Session per request, closed at teardown.
"""

from __future__ import annotations

import threading

from flask import Flask, g
from sqlalchemy import select
from sqlalchemy.orm import Session

from .common import Thing, make_engine

_local = threading.local()


def create_app(db_path: str, *, kept: bool = True) -> Flask:
    app = Flask(__name__)
    engine = make_engine(db_path)
    _local.__dict__.clear()

    def session() -> Session:
        if kept:
            if not hasattr(_local, "session"):
                _local.session = Session(engine)
            return _local.session  # type: ignore[no-any-return]
        if "session" not in g:
            g.session = Session(engine)
        return g.session

    @app.teardown_appcontext
    def close(exc: BaseException | None = None) -> None:
        own = g.pop("session", None)
        if own is not None:
            own.close()

    @app.get("/things")
    def things() -> dict[str, list[str]]:
        return {"things": [t.name for t in session().scalars(select(Thing))]}

    app.extensions["session_getter"] = session
    app.extensions["thread_local"] = _local
    return app
