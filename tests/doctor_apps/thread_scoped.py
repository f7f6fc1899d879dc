"""A plain `scoped_session(sessionmaker())` (thread-local) app.

Bug (remove=False): nothing calls `remove()` at the end of a request, so the next request on the
same thread gets the same Session back (scoped_session_not_removed).
Clean (remove=True): `@app.teardown_appcontext` calls `db_session.remove()`.
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import scoped_session, sessionmaker

from .common import Thing, make_engine


def create_app(db_path: str, *, remove: bool = False) -> Flask:
    app = Flask(__name__)
    db_session = scoped_session(sessionmaker(bind=make_engine(db_path)))
    app.extensions["db_session"] = db_session

    @app.get("/things")
    def things() -> dict[str, list[str]]:
        return {"things": [t.name for t in db_session.scalars(select(Thing))]}

    if remove:
        @app.teardown_appcontext
        def remove_session(exc: BaseException | None = None) -> None:
            db_session.remove()

    return app
