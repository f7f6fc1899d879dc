"""The plain-SQLAlchemy model and helpers shared by the non-Flask-SQLAlchemy apps (no bug here)."""

from __future__ import annotations

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
