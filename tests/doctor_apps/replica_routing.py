"""An app that writes to a PostgreSQL primary and reads from its streaming replica, routed the
way SQLAlchemy's docs show (a Session subclass overriding `get_bind`), plain SQLAlchemy.

With `buggy=True` every read of a GET goes to the replica, even right after the client's own
edit (replica_lag); with `buggy=False` a client that wrote in the last few seconds reads from
the primary (read-your-writes by "stick to the primary after a write", kept in Flask's signed
session cookie). POST /settings/<id> saves a value (one UPDATE statement); GET /settings/<id> shows it.
"""

from __future__ import annotations

import time
from typing import Any

from flask import Flask, g, request, session
from sqlalchemy import Engine, Integer, String, create_engine, update
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

STICKY_SECONDS = 5.0


class Base(DeclarativeBase):
    pass


class Setting(Base):
    __tablename__ = "settings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[str] = mapped_column(String(50))


class RoutingSession(Session):
    def __init__(self, engines: dict[str, Engine], read_from: str, **kw: Any) -> None:
        super().__init__(**kw)
        self.engines, self.read_from = engines, read_from

    def get_bind(self, mapper: Any = None, clause: Any = None, **kw: Any) -> Engine:
        if self._flushing or request.method != "GET":
            return self.engines["primary"]
        return self.engines[self.read_from]


def seed(primary_url: str) -> None:
    engine = create_engine(primary_url)
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    with Session(engine) as s:
        s.add(Setting(id=1, value="old"))
        s.commit()
    engine.dispose()


def create_app(primary_url: str, replica_url: str, *, buggy: bool) -> Flask:
    app = Flask(__name__)
    app.secret_key = "test only"
    engines = {"primary": create_engine(primary_url), "replica": create_engine(replica_url)}

    def db() -> Session:
        if "db" not in g:
            wrote_lately = time.time() - session.get("wrote_at", 0) < STICKY_SECONDS
            g.db = RoutingSession(engines, "primary" if wrote_lately and not buggy else "replica")
        return g.db  # type: ignore[no-any-return]

    @app.teardown_appcontext
    def close(exc: BaseException | None = None) -> None:
        own = g.pop("db", None)
        if own is not None:
            own.close()

    @app.post("/settings/<int:setting_id>")
    def save(setting_id: int) -> dict[str, Any]:
        db().execute(update(Setting).where(Setting.id == setting_id).values(value=request.form["value"]))
        db().commit()
        session["wrote_at"] = time.time()
        return {"saved": request.form["value"]}

    @app.get("/settings/<int:setting_id>")
    def show(setting_id: int) -> dict[str, Any]:
        return {"value": db().get(Setting, setting_id).value}

    app.extensions["engines"], app.extensions["session"] = engines, db
    return app
