"""A Flask-SQLAlchemy app shaped like a blog with log-in: every request touches the user.

Each request loads the signed-in user (`g.user`, as Flask-Login's user loader does) and a
`before_request` hook stamps `last_seen` (a datetime) and `seen_ms` (the clock in epoch
milliseconds, as MLflow stamps `last_update_time`) and commits, as many real apps do. That is a
blind write: nobody was shown the value it overwrites. The views:
- GET /users/<name>: a profile (reads only; it sets `about` to itself, stripped, and a count
  autoflushes: a dirty object with no change, no UPDATE sent, nothing uncommitted);
- POST /profile: the user's own edit, from a form (`about` and, with `versioned`, the version
  the form showed); with `versioned=False` the edit sets what the form sent over the row as
  loaded (lost_update) / with `versioned=True` a conditional UPDATE ... WHERE version = seen;
- POST /users/<name>/visit: `visits = visits + 1` computed in Python from the loaded row
  (lost_update) / `with versioned=True` an UPDATE that adds 1 in the database;
- POST /token: a new API token of the code's own making (a blind write either way);
- POST /users: a sign-up that INSERTs the user, commits, then sets the submitted `about` on the
  row it just made and commits again (as privacyIDEA's token enrolment does): nobody was shown
  that row before, so no edit can be lost (no finding either way).
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from typing import Any

from flask import Flask, Response, g, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import BigInteger, DateTime, Integer, String, func, select, update
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()


class User(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "profile_users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40), unique=True)
    about: Mapped[str] = mapped_column(String(200), default="")
    visits: Mapped[int] = mapped_column(Integer, default=0)
    version: Mapped[int] = mapped_column(Integer, default=1)
    token: Mapped[str] = mapped_column(String(64), default="")
    last_seen: Mapped[dt.datetime | None] = mapped_column(DateTime, nullable=True)
    seen_ms: Mapped[int] = mapped_column(BigInteger, default=1)


def create_app(db_path: str, *, versioned: bool) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}")
    db.init_app(app)

    @app.before_request
    def touch() -> None:
        g.user = db.session.scalar(select(User).where(User.name == "alice"))
        g.user.last_seen = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        g.user.seen_ms = int(time.time() * 1000) + len(request.path)  # a clock read (+ a few ms), not a count
        db.session.commit()

    @app.get("/users/<name>")
    def profile(name: str) -> Response:
        user = db.first_or_404(select(User).where(User.name == name))
        user.about = user.about.strip()  # a value set to itself: dirty, but the flush sends no UPDATE
        others = db.session.scalar(select(func.count()).select_from(User))  # autoflushes that dirty object
        return jsonify(name=user.name, about=user.about, visits=user.visits, version=user.version, users=others)

    @app.post("/profile")
    def edit_profile() -> tuple[Response, int]:
        about = request.form["about"]
        if not versioned:
            g.user.about = about
            db.session.commit()
            return jsonify(about=about), 200
        result = db.session.execute(update(User).where(User.id == g.user.id, User.version == int(request.form["version"]))
                                    .values(about=about, version=User.version + 1))
        db.session.commit()
        return jsonify(about=about), (200 if result.rowcount == 1 else 409)

    @app.post("/users/<name>/visit")
    def visit(name: str) -> Response:
        user = db.first_or_404(select(User).where(User.name == name))
        if versioned:
            db.session.execute(update(User).where(User.id == user.id).values(visits=User.visits + 1))
        else:
            user.visits = user.visits + 1
        db.session.commit()
        return jsonify(ok=True)

    @app.post("/token")
    def new_token() -> Response:
        g.user.token = secrets.token_hex(16)
        db.session.commit()
        return jsonify(ok=True)

    @app.post("/users")
    def sign_up() -> Response:
        user = User(name=request.form["name"])
        db.session.add(user)
        db.session.commit()
        if not user.about:  # the row as this request made it, reloaded after the commit
            user.about = request.form["about"]
        db.session.commit()
        return jsonify(id=user.id)

    with app.app_context():
        db.create_all()
        if db.session.scalar(select(User).where(User.name == "alice")) is None:
            db.session.add_all([User(name="alice", about="hi"), User(name="bob", about="yo")])
            db.session.commit()
        db.engine.dispose()
    return app


def profile_flow(app: Flask, **edit: Any) -> list[int]:
    """Log-in-like flow: open a profile, edit one's own, open it again, a new token."""
    client = app.test_client()
    statuses = [client.get("/users/alice").status_code]
    version = client.get("/users/alice").get_json()["version"]
    statuses.append(client.post("/profile", data={"about": "edited", "version": str(version), **edit}).status_code)
    statuses.append(client.get("/users/bob").status_code)
    statuses.append(client.post("/token").status_code)
    return statuses
