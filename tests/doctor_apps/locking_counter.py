"""A Flask-SQLAlchemy app that increments a counter under a row lock (sqlalchemy/sqlalchemy #5572).

POST /counters/<id>/increment first loads the counter (404 if missing), then locks its row with
SELECT ... FOR UPDATE and adds one. With `buggy=True` the locking read has no populate_existing:
it returns the object the first read loaded, unrefreshed (identity_map). With `buggy=False` it
has populate_existing, so the locked row overwrites the object.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, current_app, jsonify
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, select
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()


class Counter(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "doctor_counters"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    hits: Mapped[int] = mapped_column(Integer, default=0)


def create_app(url: str, *, buggy: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=url, BUGGY=buggy)
    db.init_app(app)

    @app.post("/counters/<int:counter_id>/increment")
    def increment(counter_id: int) -> Response:
        # Kept in a variable, as a view does that checks or logs something about the row first:
        # the identity map holds objects weakly, so a discarded first read would leave nothing
        # for the locking read to find (and no bug).
        before = db.get_or_404(Counter, counter_id)
        current_app.logger.debug("incrementing counter %s from %s", before.id, before.hits)
        locking = select(Counter).where(Counter.id == counter_id).with_for_update()
        if not current_app.config["BUGGY"]:
            locking = locking.execution_options(populate_existing=True)
        counter = db.session.scalars(locking).one()
        counter.hits += 1
        db.session.commit()
        return jsonify({"id": counter_id, "hits": counter.hits})

    @app.get("/counters/<int:counter_id>")
    def show(counter_id: int) -> Response:
        return jsonify({"hits": db.get_or_404(Counter, counter_id).hits})

    return app


def setup(app: Flask, **_: Any) -> None:
    with app.app_context():
        db.drop_all()
        db.create_all()
        db.session.add(Counter(id=1, hits=0))
        db.session.commit()


def teardown(app: Flask) -> None:
    with app.app_context():
        db.drop_all()
        db.engine.dispose()
