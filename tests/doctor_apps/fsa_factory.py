"""A Flask-SQLAlchemy 3.x app: `db = SQLAlchemy()` at module level, an app factory, a Blueprint.

With `buggy=True` its views have one stale-data bug each; with `buggy=False` the same views are clean:
- GET /items/cached: keeps the ORM objects in the module-level dict `_CACHE` between requests
  (global_cache) / builds plain dicts per request;
- POST /items: flush() without commit() (uncommitted) / commit();
- GET /items/page?offset=N: an OFFSET page (offset_pagination when N > 0);
- POST /items/<id>/rename: load, modify, commit without version_id_col (lost_update) /
  a conditional UPDATE ... WHERE id = ? AND version = ?;
- GET /items/headers: Cache-Control: max-age=60 (browser_cache) / no-store;
- GET /items/tagged: the newest items with `no-cache` and an ETag built from the query string only, so
  it answers 304 after POST /items/tagged added one (browser_cache) / built from the rows' ids and versions.
GET /items is always clean.
"""

from __future__ import annotations

import hashlib
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()
bp = Blueprint("items", __name__, url_prefix="/items")
_CACHE: dict[str, Any] = {}


class Item(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    version: Mapped[int] = mapped_column(Integer, default=1)


def _buggy() -> bool:
    return bool(current_app.config["BUGGY"])


@bp.get("")
def index() -> Response:
    return jsonify([item.name for item in db.session.scalars(select(Item).order_by(Item.id))])


@bp.get("/cached")
def cached() -> Response:
    if _buggy():
        if "items" not in _CACHE:
            _CACHE["items"] = db.session.scalars(select(Item).order_by(Item.id).limit(5)).all()
        return jsonify([item.name for item in _CACHE["items"]])
    rows = db.session.scalars(select(Item).order_by(Item.id).limit(5)).all()
    return jsonify([{"id": item.id, "name": item.name} for item in rows])


@bp.post("")
def create() -> tuple[Response, int]:
    item = Item(name=request.form.get("name", "new"))
    db.session.add(item)
    if _buggy():
        db.session.flush()
    else:
        db.session.commit()
    return jsonify({"id": item.id}), 201


@bp.get("/page")
def page() -> Response:
    offset = int(request.args.get("offset", 0))
    rows = db.session.scalars(select(Item).order_by(Item.id).offset(offset).limit(10))
    return jsonify([item.id for item in rows])


@bp.post("/<int:item_id>/rename")
def rename(item_id: int) -> tuple[Response, int]:
    name = request.form["name"]
    if _buggy():
        item = db.get_or_404(Item, item_id)
        item.name = name
        db.session.commit()
        return jsonify({"id": item_id}), 200
    seen = int(request.form["version"])
    result = db.session.execute(update(Item).where(Item.id == item_id, Item.version == seen)
                                .values(name=name, version=Item.version + 1))
    db.session.commit()
    return jsonify({"id": item_id}), (200 if result.rowcount == 1 else 409)


@bp.get("/headers")
def headers() -> Response:
    response = jsonify([item.name for item in db.session.scalars(select(Item).limit(3))])
    response.headers["Cache-Control"] = "max-age=60" if _buggy() else "no-store"
    return response


@bp.get("/tagged")
def tagged() -> Response:
    items = db.session.scalars(select(Item).order_by(Item.id.desc()).limit(3)).all()
    tag = (request.query_string.decode() or "all") if _buggy() else ",".join(f"{i.id}.{i.version}" for i in items)
    response = jsonify([item.name for item in items])
    response.headers["Cache-Control"] = "no-cache"
    response.set_etag(hashlib.sha256(tag.encode()).hexdigest()[:16])
    return response.make_conditional(request)


@bp.post("/tagged")
def add_tagged() -> tuple[Response, int]:
    db.session.add(Item(name=request.form.get("name", "new")))
    db.session.commit()
    return jsonify({}), 201


def create_app(db_path: str, *, buggy: bool = True, **config: Any) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}", BUGGY=buggy, **config)
    db.init_app(app)
    app.register_blueprint(bp)
    _CACHE.clear()
    with app.app_context():
        db.create_all()
        if db.session.scalar(select(db.func.count(Item.id))) == 0:
            db.session.add_all(Item(name=f"item {i}") for i in range(30))
            db.session.commit()
        db.engine.dispose()  # the pool starts empty: the app touches no connection before serving
    return app
