"""An app whose engine is created once and shared with processes forked after it served a request.

Bug: a child process made with fork() checks out a pooled connection the parent made
(pool_across_fork). Clean: the child calls `engine.dispose(close=False)` first
(see `dispose_in_child`).
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from .common import Thing, make_engine


def create_app(db_path: str) -> Flask:
    app = Flask(__name__)
    engine = make_engine(db_path)
    Session = sessionmaker(bind=engine)
    app.extensions["engine"] = engine
    app.extensions["sessionmaker"] = Session

    @app.get("/things")
    def things() -> dict[str, list[str]]:
        with Session() as session:
            return {"things": [t.name for t in session.scalars(select(Thing))]}

    return app


def dispose_in_child(app: Flask) -> None:
    """The cure, run in a forked child before it touches the database."""
    app.extensions["engine"].dispose(close=False)
