"""The plain-SQLAlchemy model and helpers shared by the non-Flask-SQLAlchemy apps (no bug here)."""

from __future__ import annotations

from typing import Callable

from flask import Flask, g
from sqlalchemy import Engine, Integer, String, create_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column


class Base(DeclarativeBase):
    pass


class Thing(Base):
    __tablename__ = "things"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(50))


def make_engine(db_path: str, rows: int = 3) -> Engine:
    """An engine on a seeded SQLite file; the seeding engine is disposed, so the pool starts empty."""
    url = f"sqlite:///{db_path}"
    seeder = create_engine(url)
    Base.metadata.create_all(seeder)
    with Session(seeder) as session:
        if session.query(Thing).count() == 0:
            session.add_all(Thing(name=f"thing {i}") for i in range(rows))
            session.commit()
    seeder.dispose()
    return create_engine(url)


def session_per_request(app: Flask, engine: Engine) -> Callable[[], Session]:
    """The clean way: a Session per request (kept on `g`), closed when the app context ends."""

    @app.teardown_appcontext
    def close(exc: BaseException | None = None) -> None:
        own = g.pop("session", None)
        if own is not None:
            own.close()

    def session() -> Session:
        if "session" not in g:
            g.session = Session(engine)
        return g.session  # type: ignore[no-any-return]

    return session
