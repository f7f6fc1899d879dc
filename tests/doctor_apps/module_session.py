"""A plain `Session` created at module level (`SESSION`) and used by every request.

Bug (shared=True): one Session serves all requests (shared_session).
Clean (shared=False): a Session per request, closed at teardown.
"""

from __future__ import annotations

from flask import Flask, g
from sqlalchemy import select
from sqlalchemy.orm import Session

from .common import Thing, make_engine

SESSION = Session()


def create_app(db_path: str, *, shared: bool = True) -> Flask:
    app = Flask(__name__)
    engine = make_engine(db_path)
    SESSION.bind = engine
    app.extensions["engine"] = engine

    def session() -> Session:
        if shared:
            return SESSION
        if "session" not in g:
            g.session = Session(engine)
        return g.session

    app.extensions["session_getter"] = session

    @app.teardown_appcontext
    def close(exc: BaseException | None = None) -> None:
        own = g.pop("session", None)
        if own is not None:
            own.close()

    @app.get("/things")
    def things() -> dict[str, list[str]]:
        names = [t.name for t in session().scalars(select(Thing))]
        if shared:
            SESSION.commit()  # even a session that commits is shared between requests
        return {"things": names}

    return app
