"""A blog-shaped Flask-SQLAlchemy app with values computed once (import_time), and its clean twin.

The shapes of the real reports: a form's category choices queried when the app is built
(miguelgrinberg/microblog #80), and `default=datetime.now(timezone.utc)` on a timestamp column
(flask-dashboard/Flask-MonitoringDashboard #543). Each twin has its own models (a model's
default is fixed when the class is defined), so they are two declarative bases side by side:
- `buggy=True`: `BuggyPost.created_at` has `default=datetime.now(timezone.utc)`, a value; the
  category choices are read in create_app and served by GET /choices;
- `buggy=False`: `Post.created_at` has `default=utc_now`, the function; GET /choices reads them.
`wrapped=True`: the clean choices, and `default=lambda: _IMPORTED_AT` (the bug behind a function).
POST /categories adds a category; POST /posts adds a post (its created_at from the default).
"""

from __future__ import annotations

from datetime import datetime, timezone

from flask import Flask, Response, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import DateTime, Integer, String, select
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class BuggyBase(DeclarativeBase):
    pass


class CleanBase(DeclarativeBase):
    pass


class WrappedBase(DeclarativeBase):
    pass


_IMPORTED_AT = datetime.now(timezone.utc)


class BuggyCategory(BuggyBase):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class BuggyPost(BuggyBase):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=datetime.now(timezone.utc))


class Category(CleanBase):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class Post(CleanBase):
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=utc_now)


class WrappedCategory(WrappedBase):
    __tablename__ = "categories"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


class WrappedPost(WrappedBase):
    """The bug behind a function: the function returns the time computed at import."""
    __tablename__ = "posts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    title: Mapped[str] = mapped_column(String(50))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=lambda: _IMPORTED_AT)


def create_app(db_path: str, *, buggy: bool, wrapped: bool = False, install=None) -> Flask:  # type: ignore[no-untyped-def]
    """`install(app, db)` (the doctor) runs right after db.init_app, as a user would add it."""
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}", TESTING=True)
    base = WrappedBase if wrapped else BuggyBase if buggy else CleanBase
    CategoryModel, PostModel = ((WrappedCategory, WrappedPost) if wrapped else (BuggyCategory, BuggyPost) if buggy
                                else (Category, Post))
    db = SQLAlchemy(model_class=base)
    db.init_app(app)
    with app.app_context():
        base.metadata.create_all(db.engine)
        db.session.add_all([CategoryModel(name="news"), CategoryModel(name="howto")])
        db.session.commit()
    app.extensions["test_db"] = db
    if install is not None:
        install(app, db)

    choices: list[str] = []
    if buggy:
        with app.app_context():
            choices = [c.name for c in db.session.scalars(select(CategoryModel).order_by(CategoryModel.id))]

    @app.get("/choices")
    def category_choices() -> Response:
        if buggy:
            return jsonify(choices)
        return jsonify([c.name for c in db.session.scalars(select(CategoryModel).order_by(CategoryModel.id))])

    @app.post("/categories")
    def add_category() -> tuple[Response, int]:
        db.session.add(CategoryModel(name=request.form["name"]))
        db.session.commit()
        return jsonify({"ok": True}), 201

    @app.post("/posts")
    def add_post() -> tuple[Response, int]:
        post = PostModel(title=request.form["title"])
        db.session.add(post)
        db.session.commit()
        return jsonify({"id": post.id, "created_at": post.created_at.isoformat()}), 201

    return app
