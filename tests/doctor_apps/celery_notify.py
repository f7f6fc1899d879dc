"""A Flask-SQLAlchemy app with a Celery task, in Flask's own pattern (`app.extensions["celery"]`).

POST /orders/<id>/ship records a shipment (ORM, flushed; `?core=1`: an ORM-enabled UPDATE of
the order instead) and sends the `orders.shipped` task (the email):
with `buggy=True` the task is sent after the flush (or after an ORM-enabled UPDATE), before
commit() (enqueue_before_commit); with `buggy=False` after commit(). The broker is kombu's
in-memory transport: the task is published (Celery's signals fire) and no worker is needed.
"""

from __future__ import annotations

from typing import Any

from celery import Celery
from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String, select, update
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.wrappers import Response

db = SQLAlchemy()


class Order(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "orders"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    status: Mapped[str] = mapped_column(String(20), default="new")


class Shipment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "shipments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(Integer)


def create_app(db_path: str, *, buggy: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}")
    db.init_app(app)
    celery = Celery(app.name, broker="memory://", backend="cache+memory://")
    app.extensions["celery"] = celery

    @celery.task(name="orders.shipped", shared=False)
    def shipped(order_id: int) -> None:  # run by a worker; not run in these tests
        pass

    @app.post("/orders/<int:order_id>/ship")
    def ship(order_id: int) -> Response:
        if request.args.get("core"):
            db.session.execute(update(Order).where(Order.id == order_id).values(status="shipped"))
        else:
            db.session.add(Shipment(order_id=order_id))
            db.session.flush()
        if buggy:
            shipped.delay(order_id)  # the worker may read the order before the commit below
            db.session.commit()
        else:
            db.session.commit()
            shipped.delay(order_id)
        return jsonify({"id": order_id})

    @app.get("/orders/<int:order_id>/remind")
    def remind(order_id: int) -> Response:  # reads only, then sends: nothing written, nothing to report
        order: Any = db.session.scalar(select(Order).where(Order.id == order_id))
        shipped.delay(order.id)
        return jsonify({"id": order.id, "status": order.status})

    with app.app_context():
        db.create_all()
        db.session.add_all(Order(id=i) for i in range(1, 4))
        db.session.commit()
        db.engine.dispose()
    return app
