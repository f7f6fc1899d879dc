"""A Flask-SQLAlchemy app with a login that keeps the user in Flask's cookie session.

With `buggy=True`, POST /login stores the user's display name and role (database values) in
the session and GET /me reads them from there (session_cookie_snapshot: a role granted from
the CLI shows only after a new login, as in ssl-hep/ServiceX PR 1479); with `buggy=False` it
stores the user's id only and GET /me reads the row. Either way it also keeps, like real
apps do, values the user sent (`session["search"]`) and Flask-Login's string `_user_id`,
which are not copies of the database.
"""

from __future__ import annotations

from flask import Flask, jsonify, request, session
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column
from werkzeug.wrappers import Response

db = SQLAlchemy()


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    email: Mapped[str] = mapped_column(String(100), unique=True)
    name: Mapped[str] = mapped_column(String(100))
    role: Mapped[str] = mapped_column(String(20))


def create_app(db_path: str, *, buggy: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}", SECRET_KEY="a test key that is long enough!!")
    db.init_app(app)
    with app.app_context():
        db.create_all()
        if db.session.scalar(select(User).limit(1)) is None:
            db.session.add_all([User(email="ada@example.org", name="Ada Lovelace", role="user"),
                                User(email="bob@example.org", name="Bob Builder", role="user")])
            db.session.commit()

    @app.post("/login")
    def login() -> Response:
        user = db.session.scalars(select(User).where(User.email == request.form["email"])).one()
        session["_user_id"] = str(user.id)  # Flask-Login's shape: a string, but an id
        if buggy:
            session["user"] = {"name": user.name, "role": user.role}  # the bug: database values
        else:
            session["user_id"] = user.id
        return jsonify({"ok": True})

    @app.get("/me")
    def me() -> Response:
        if buggy:
            return jsonify(session["user"])
        user = db.session.get(User, session["user_id"])
        return jsonify({"name": user.name, "role": user.role})

    @app.get("/search")
    def search() -> Response:
        # The user's own text, which here equals a name in the database: not a copy of it.
        session["search"] = request.args["q"]
        found = db.session.scalars(select(User).where(User.name == request.args["q"])).all()
        return jsonify([u.id for u in found])

    return app
