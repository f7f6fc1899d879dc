"""A Flask-SQLAlchemy app whose list view is cached whole, in Flask-Caching or a plain dict.

GET /notes answers from the cache when it holds the page (`@cache.cached()`, or a module-level
dict keyed by the URL); POST /notes/<id> edits a note (with its version) and commits. With
`invalidate=True` the edit deletes the cached page after its commit (clean); with
`invalidate=False` nothing deletes it and the page keeps the old rows (http_cache). With
`hooked=True` a `before_request` hook loads the signed-in viewer on every request, as an API's
log-in check does, so a cached answer still runs a statement (on another table). GET /board is
never cached: it reads the notes, and the viewer's row only for a signed-in person (a header),
so the same URL is read differently by two people (no finding: no cache answered).
"""

from __future__ import annotations

from typing import Any

from flask import Flask, Response, g, jsonify, request
from flask_caching import Cache
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String, select, update
from sqlalchemy.orm import Mapped, mapped_column

db = SQLAlchemy()
_PAGES: dict[str, Any] = {}


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "cached_notes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    text: Mapped[str] = mapped_column(String(50))
    version: Mapped[int] = mapped_column(Integer, default=1)


class Viewer(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "cached_viewers"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def _notes() -> list[str]:
    return [note.text for note in db.session.scalars(select(Note).order_by(Note.id))]


def create_app(db_path: str, *, store: str, invalidate: bool, hooked: bool = False) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}")
    db.init_app(app)
    _PAGES.clear()
    cache = Cache(app, config={"CACHE_TYPE": "SimpleCache"})

    if hooked:
        @app.before_request
        def load_viewer() -> None:
            g.viewer = db.session.get(Viewer, 1)

    if store == "flask_caching":
        @app.get("/notes")
        @cache.cached()
        def notes() -> Response:
            return jsonify(_notes())
    else:
        @app.get("/notes")
        def notes() -> Response:
            if request.path not in _PAGES:
                _PAGES[request.path] = _notes()
            return jsonify(_PAGES[request.path])

    @app.get("/board")
    def board() -> Response:
        viewer = db.session.get(Viewer, 1) if request.headers.get("X-Viewer") else None
        return jsonify(notes=_notes(), viewer=viewer.name if viewer else None)

    @app.post("/viewer")
    def rename_viewer() -> Response:
        db.session.execute(update(Viewer).where(Viewer.id == 1).values(name=request.form["name"]))
        db.session.commit()
        return jsonify(ok=True)

    @app.post("/notes/<int:note_id>")
    def edit(note_id: int) -> tuple[Response, int]:
        note = db.get_or_404(Note, note_id)
        result = db.session.execute(update(Note).where(Note.id == note_id, Note.version == note.version)
                                    .values(text=request.form["text"], version=Note.version + 1))
        db.session.commit()
        if invalidate:
            cache.delete("view//notes")
            _PAGES.pop("/notes", None)
        return jsonify(ok=result.rowcount == 1), 200

    with app.app_context():
        db.create_all()
        if db.session.get(Note, 1) is None:
            db.session.add_all([Note(id=1, text="first"), Note(id=2, text="second"), Viewer(id=1, name="ann")])
            db.session.commit()
        db.engine.dispose()
    return app
