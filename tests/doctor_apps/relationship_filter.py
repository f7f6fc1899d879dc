"""A wallet page that loads a wallet with its entries, then filters by the relationship itself
(`select(Entry).where(Entry.wallet == wallet)`), as privacyIDEA's token list does.

SQLAlchemy keeps that statement in its compiled cache, and the bound value of the comparison
closes over the wallet's attribute dictionary, so the entries loaded into `wallet.entries`
stay alive after the request, held by nothing the app can read (the wallet itself is gone).

Clean (cached=False): no finding at all. Bug (cached=True): the view also keeps each wallet it
loaded in a module-level dict (`WALLETS`), a real global_cache of the wallet and its entries.
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import ForeignKey, String, create_engine, func, select
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship, selectinload

from .common import session_per_request

WALLETS: dict[int, "Wallet"] = {}


class Base(DeclarativeBase):
    pass


class Wallet(Base):
    __tablename__ = "wallets"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(50))
    entries: Mapped[list["Entry"]] = relationship(back_populates="wallet")


class Entry(Base):
    __tablename__ = "entries"
    id: Mapped[int] = mapped_column(primary_key=True)
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallets.id"))
    note: Mapped[str] = mapped_column(String(50))
    wallet: Mapped[Wallet] = relationship(back_populates="entries")


def create_app(db_path: str, *, cached: bool) -> Flask:
    app = Flask(__name__)
    engine = create_engine(f"sqlite:///{db_path}")
    Base.metadata.create_all(engine)
    with Session(engine) as session:
        session.add_all(Wallet(id=i, label=f"wallet {i}", entries=[Entry(note=f"entry {i}.{j}") for j in range(2)])
                        for i in (1, 2))
        session.commit()
    session_of = session_per_request(app, engine)
    app.extensions["sessionmaker"] = lambda: session_of()

    @app.get("/wallets/<int:wallet_id>")
    def wallet_page(wallet_id: int) -> dict[str, object]:
        session = session_of()
        wallet = session.scalars(select(Wallet).options(selectinload(Wallet.entries))
                                 .where(Wallet.id == wallet_id)).one()
        count = session.scalar(select(func.count()).select_from(Entry).where(Entry.wallet == wallet))
        if cached:
            WALLETS[wallet_id] = wallet  # the bug: kept past the request
        return {"label": wallet.label, "entries": [e.note for e in wallet.entries], "count": count}

    return app
