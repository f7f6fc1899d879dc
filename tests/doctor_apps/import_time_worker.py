"""A worker module as queue workers write it: `app = create_app(); app.app_context().push()`
at import, then every job runs in that one app context (RQ's and many cron scripts' shape).

Run as a script: `python -m tests.doctor_apps.import_time_worker DB_PATH FINDINGS MODE`.
The first job reads (its session's transaction begins), works past the job threshold and
dies with an exception before any commit; the worker catches it and goes on, as RQ does. With
MODE `next-job` a second job runs a statement afterwards; with `exit` the worker exits. With
`clean` the job ends its transaction before the long work and removes its session in a
`finally`, as a careful worker does (and then runs the second job).
"""

from __future__ import annotations

import sys
import time

from flask import Flask
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import Integer, String, select, text
from sqlalchemy.orm import Mapped, mapped_column

from stale_doctor import StaleDoctor

db = SQLAlchemy()


class Job(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = "worker_jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(40))


def create_app(db_path: str, findings: str) -> Flask:
    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=f"sqlite:///{db_path}", STALE_DOCTOR_FILE=findings,
                      STALE_DOCTOR_JOB_MAX_SECONDS=0.5, STALE_DOCTOR_TRANSACTION_MAX_SECONDS=0.5)
    db.init_app(app)
    StaleDoctor(app, db)
    with app.app_context():
        db.create_all()
        db.session.add(Job(name="first"))
        db.session.commit()
    return app


def failing_job(clean: bool) -> None:
    try:
        db.session.scalars(select(Job)).all()  # the job's transaction begins here
        if clean:
            db.session.rollback()  # read what it needs, then end the transaction before the long work
        time.sleep(0.8)  # work past STALE_DOCTOR_JOB_MAX_SECONDS
        raise RuntimeError("the job failed before its commit")
    finally:
        if clean:
            db.session.remove()


def main(db_path: str, findings: str, mode: str) -> None:
    app = create_app(db_path, findings)
    app.app_context().push()  # at import in the real shape: never popped
    try:
        failing_job(clean=mode == "clean")
    except RuntimeError:
        pass  # the worker logs the failure and takes the next job
    if mode in ("next-job", "clean"):
        with db.engine.connect() as conn:  # the next job's first statement, on another connection
            conn.execute(text("SELECT 1"))


if __name__ == "__main__":
    main(*sys.argv[1:4])
