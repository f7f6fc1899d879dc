"""A Flask-SQLAlchemy app that sends an RQ job, as RQ's docs show (`Queue(connection=Redis(...))`).

POST /orders/<id>/ship records a shipment (ORM, flushed) and enqueues `orders.shipped` on an RQ
queue: with `buggy=True` the job is enqueued after the flush, before commit()
(enqueue_before_commit); with `buggy=False` after commit(). `?many=1` sends it with
`enqueue_many`. The queue lives on the lab's Redis (LAB_TEST_BROKER_URL) under a name of the
test's own; no worker runs, the job is only enqueued (with `is_async=False`, RQ runs it at once).
"""

from __future__ import annotations

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from redis import Redis
from rq import Queue
from sqlalchemy import Integer
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.wrappers import Response

db = SQLAlchemy()


class Shipment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "shipments"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    order_id: Mapped[int] = mapped_column(Integer)


def shipped(order_id: int) -> int:
    """The job: a worker would email the shipment here."""
    return order_id


def create_app(db_path: str, redis_url: str, queue_name: str, *, buggy: bool, is_async: bool = True) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}")
    db.init_app(app)
    queue = Queue(queue_name, connection=Redis.from_url(redis_url), is_async=is_async)
    app.extensions["rq"] = queue

    def send(order_id: int) -> None:
        if request.args.get("many"):
            queue.enqueue_many([Queue.prepare_data(shipped, args=(order_id,))])
        else:
            queue.enqueue(shipped, order_id)

    @app.post("/orders/<int:order_id>/ship")
    def ship(order_id: int) -> Response:
        db.session.add(Shipment(order_id=order_id))
        db.session.flush()
        if buggy:
            send(order_id)  # the worker may read the shipment before the commit below
            db.session.commit()
        else:
            db.session.commit()
            send(order_id)
        return jsonify({"id": order_id})

    with app.app_context():
        db.create_all()
    return app
