"""Run in a venv of one version set (tests/doctor_versions/<name>.lock): a small Flask-SQLAlchemy
app written for every supported version (no API newer than Flask 2.2, Flask-SQLAlchemy 2.5 and
SQLAlchemy 1.4), each cause's bug switched on by a URL, and the same pages clean. Prints one JSON
object: the versions, and per case the causes the doctor found.

    <venv>/bin/python tests/doctor_versions/check.py WORKDIR
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

from flask import Flask, jsonify, request
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Column, Integer, String, create_engine, select
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from stale_doctor import StaleDoctor

db = SQLAlchemy()
CACHE: dict[int, Any] = {}  # global_cache: ORM objects kept past their request
PAGES: dict[str, Any] = {}  # http_cache: whole answers kept by URL
SESSION = Session()  # shared_session: one module-global Session for every request
THREAD_LOCAL = scoped_session(sessionmaker())  # scoped_session_not_removed: nothing calls remove()


class Note(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "version_notes"
    id = Column(Integer, primary_key=True)
    text = Column(String(50), nullable=False)
    version = Column(Integer, nullable=False, default=1)
    __mapper_args__ = {"version_id_col": version}


class Tag(db.Model):  # type: ignore[name-defined,misc]  # no version: its edit is a lost update
    __tablename__ = "version_tags"
    id = Column(Integer, primary_key=True)
    label = Column(String(50), nullable=False)


def create_app(path: Path, *, bug: str | None) -> tuple[Flask, StaleDoctor]:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{path}", SQLALCHEMY_TRACK_MODIFICATIONS=False,
                      STALE_DOCTOR_APP_PACKAGES="__main__", TESTING=True)
    if bug == "long_transaction":
        app.config["STALE_DOCTOR_TRANSACTION_MAX_SECONDS"] = "0.5"
    db.init_app(app)
    doctor = StaleDoctor(app, db)  # in the factory, as the README says: it sees what the factory reads
    with app.app_context():
        db.create_all()
        db.session.add_all([Note(id=i, text=f"note {i}") for i in range(1, 31)] + [Tag(id=1, label="tag")])
        db.session.commit()
        doctor.clear()  # the seeding's own findings (none expected) are not the case's
        if bug == "import_time":
            app.config["CHOICES"] = [n.text for n in db.session.execute(select(Note)).scalars()]  # frozen at creation
        SESSION.bind = db.engine
        db.session.remove()
    THREAD_LOCAL.remove()
    THREAD_LOCAL.configure(bind=create_engine(f"sqlite:///{path}"))

    def session() -> Any:
        if bug == "shared_session":
            return SESSION
        if bug == "scoped_session_not_removed":
            return THREAD_LOCAL()
        return db.session

    @app.get("/notes")
    def notes() -> Any:
        if bug == "http_cache" and request.full_path in PAGES:
            return PAGES[request.full_path]
        page = int(request.args.get("page", "1"))
        rows = session().execute(select(Note).order_by(Note.id).limit(10).offset((page - 1) * 10)).scalars().all()
        if bug == "global_cache":
            CACHE.update((n.id, n) for n in rows)
        if bug == "long_transaction":
            time.sleep(0.8)
        answer = jsonify([n.text for n in rows])
        if bug in ("shared_session", "scoped_session_not_removed"):
            session().commit()  # even a session that commits is kept: its identity map outlives the request
        if bug == "http_cache":
            PAGES[request.full_path] = answer
        return answer

    @app.post("/notes/<int:note_id>")
    def edit(note_id: int) -> Any:
        note = session().get(Note, note_id)
        note.text = request.form["text"]
        if bug == "uncommitted":
            session().flush()
        else:
            session().commit()
        return jsonify(ok=True)

    @app.post("/tags/1")
    def edit_tag() -> Any:
        tag = db.session.get(Tag, 1)
        tag.label = request.form["label"]
        db.session.commit()
        return jsonify(ok=True)

    return app, doctor


def run(workdir: Path, bug: str | None) -> list[str]:
    for holder in (CACHE, PAGES):
        holder.clear()
    SESSION.close()
    path = workdir / f"{bug or 'clean'}.db"
    path.unlink(missing_ok=True)
    app, doctor = create_app(path, bug=bug)
    client = app.test_client()
    try:
        statuses = [client.get("/notes").status_code, client.get("/notes").status_code,
                    client.post("/notes/3", data={"text": "edited"}).status_code, client.get("/notes").status_code]
        if bug == "offset_pagination":
            statuses.append(client.get("/notes?page=2").status_code)
        if bug == "lost_update":
            statuses.append(client.post("/tags/1", data={"label": "renamed"}).status_code)
        assert statuses == [200] * len(statuses), statuses
        return sorted({f.cause for f in doctor.findings})
    finally:
        doctor.clear()
        doctor.close()


CASES = (None, "global_cache", "uncommitted", "shared_session", "scoped_session_not_removed", "long_transaction",
         "http_cache", "import_time", "offset_pagination", "lost_update")


def main() -> None:
    workdir = Path(sys.argv[1])
    workdir.mkdir(parents=True, exist_ok=True)
    versions = {name: importlib.metadata.version(name) for name in ("flask", "flask-sqlalchemy", "sqlalchemy")}
    found = {case or "clean": run(workdir, case) for case in CASES}
    print(json.dumps({"versions": versions, "found": found, "threads": threading.active_count()}))


if __name__ == "__main__":
    main()
