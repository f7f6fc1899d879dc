"""A Flask-SQLAlchemy app with a Flask-Caching memoized details read in a FileSystemCache.

GET /items/<id> answers one item's details from the cache (`item_details(id)`, memoized);
POST /items/<id>/rename commits the new name, then deletes the memoized entry with
`cache.delete_memoized(item_details, id)` and the route's int id. With `buggy=True` the read's
route has no int converter, so the read is memoized under the string id ('1') while the edit
deletes the int's key (1): the cached details never clear. Two apps on one cache folder stand
for two workers sharing one store.

The rename also answers with the item's shelf label, memoized too (`shelf_label(id)`) and read
before the rename commits: a value stored in the edit's request that holds no row of the item.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request
from flask_caching import Cache
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()


class Shelf(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "memo_shelves"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    label: Mapped[str] = mapped_column(String(50))


class Item(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "memo_items"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))
    shelf_id: Mapped[int] = mapped_column(Integer, default=1)
    version: Mapped[int] = mapped_column(Integer, default=1)  # optimistic locking: the renames lose no edit
    __mapper_args__ = {"version_id_col": version}


def create_app(db_path: str, cache_dir: str, *, buggy: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}")
    db.init_app(app)
    cache = Cache(app, config={"CACHE_TYPE": "FileSystemCache", "CACHE_DIR": cache_dir})

    @cache.memoize()
    def item_details(item_id: Any) -> dict[str, Any]:
        item = db.session.get(Item, int(item_id))
        return {"id": item.id, "name": item.name}

    @cache.memoize()
    def shelf_label(shelf_id: int) -> str:
        return db.session.get(Shelf, shelf_id).label

    def details(item_id: Any) -> dict[str, Any]:
        return item_details(item_id)

    @app.get("/shelves/<int:shelf_id>")
    def shelf(shelf_id: int) -> dict[str, Any]:
        return {"id": shelf_id, "label": shelf_label(shelf_id)}

    app.add_url_rule("/items/<item_id>" if buggy else "/items/<int:item_id>", "details", details)

    @app.post("/items/<int:item_id>/rename")
    def rename(item_id: int) -> dict[str, Any]:
        item = db.session.get(Item, item_id)
        label = shelf_label(item.shelf_id)
        item.name = request.get_json()["name"]
        db.session.commit()
        cache.delete_memoized(item_details, item_id)
        return {"id": item.id, "name": item.name, "shelf": label}

    with app.app_context():
        db.create_all()
        if db.session.get(Item, 1) is None:
            db.session.add(Shelf(id=1, label="top shelf"))
            db.session.add(Item(id=1, name="first"))
            db.session.add(Item(id=2, name="second"))
            db.session.commit()
    return app
