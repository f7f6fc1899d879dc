"""A plain `Session` created at module level (`SESSION`) and used by every request.

Bug (shared=True): one Session serves all requests (shared_session).
Clean (shared=False): a Session per request, closed at teardown.
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from .common import Thing, make_engine, session_per_request

SESSION = Session()


def create_app(db_path: str, *, shared: bool = True) -> Flask:
    app = Flask(__name__)
    engine = make_engine(db_path)
    SESSION.bind = engine
    app.extensions["engine"] = engine

    per_request = session_per_request(app, engine)

    def session() -> Session:
        return SESSION if shared else per_request()

    app.extensions["session_getter"] = session

    @app.get("/things")
    def things() -> dict[str, list[str]]:
        names = [t.name for t in session().scalars(select(Thing))]
        if shared:
            SESSION.commit()  # even a session that commits is shared between requests
        return {"things": names}

    return app
