"""The crypto-transactions schema: wallets, contacts and their transactions (and asset prices).

Column types are chosen to behave the same on SQLite, PostgreSQL and MariaDB:
- timestamps keep microseconds everywhere (MariaDB's plain DATETIME would drop them and
  break keyset cursors) and are stored as naive UTC, returned as aware UTC;
- amounts are exact decimals everywhere (SQLite has no exact numeric type: stored as text);
- an empty label is stored as NULL, which is what "unlabelled" means.

Indexes serve the list page: newest first with `id` as the unique tie-breaker, per wallet and
per filter column (lab/queries.py has the statements they serve; lab/INDEXES.md the plans on
each backend at 1M rows, and why each index is there).
"""

from __future__ import annotations

import datetime as dt
from decimal import Context, Decimal
from typing import Any, Callable, Optional

from sqlalchemy import (
    DDL,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Numeric,
    String,
    TypeDecorator,
    UniqueConstraint,
    event,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship, validates

TRANSACTION_TYPES = ("in", "out", "swap", "fee")
LABEL_MAX_LENGTH = 200
CONTACT_TEXT_MAX_LENGTH = 100  # a contact's name and address
# The largest id, version or contact id there can be: INTEGER is 32-bit on PostgreSQL and
# MariaDB. Input beyond it is refused before it reaches SQL (PostgreSQL would fail with
# "integer out of range", SQLite's driver with OverflowError beyond 64 bits).
MAX_INTEGER = 2**31 - 1
AMOUNT_PRECISION, AMOUNT_SCALE = 38, 18
# quantize() works within a context's precision, 28 digits by default: with 18 decimals that
# would refuse (InvalidOperation) any amount from 10**10 up. NUMERIC(38, 18) needs 38.
_AMOUNT_CONTEXT = Context(prec=AMOUNT_PRECISION)
_AMOUNT_QUANTUM = Decimal(1).scaleb(-AMOUNT_SCALE)


class UTCDateTime(TypeDecorator[dt.datetime]):
    """Microsecond UTC timestamps: naive UTC in the database, aware UTC in Python."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        return dialect.type_descriptor(DateTime(timezone=False))

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("timestamps must be timezone-aware (UTC)")
        return value.astimezone(dt.timezone.utc).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        return None if value is None else value.replace(tzinfo=dt.timezone.utc)


class ExactDecimal(TypeDecorator[Decimal]):
    """NUMERIC(38, 18) where the database has it; canonical text on SQLite (which would round)."""

    impl = Numeric(AMOUNT_PRECISION, AMOUNT_SCALE, asdecimal=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "sqlite":
            return dialect.type_descriptor(String(AMOUNT_PRECISION + 2))
        return dialect.type_descriptor(Numeric(AMOUNT_PRECISION, AMOUNT_SCALE, asdecimal=True))

    def process_bind_param(self, value: Decimal | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        value = Decimal(value).quantize(_AMOUNT_QUANTUM, context=_AMOUNT_CONTEXT)
        return str(value) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> Decimal | None:
        if value is None:
            return None
        return Decimal(value).quantize(_AMOUNT_QUANTUM, context=_AMOUNT_CONTEXT)


def _label_type() -> Any:
    # Binary collation on MariaDB: an exact label filter is case-sensitive, as on the others.
    return String(LABEL_MAX_LENGTH).with_variant(
        mysql.VARCHAR(LABEL_MAX_LENGTH, charset="utf8mb4", collation="utf8mb4_bin"), "mysql", "mariadb"
    )


# The columns a list filter compares with a value (see lab/queries.py `_filtered`).
FILTER_COLUMNS = ("wallet_id", "type", "asset_symbol", "contact_id", "label")


def _newest_index(name: str, *leading: str, covering: bool = True) -> Index:
    """An index in list order after `leading` (equality) columns, plus, when `covering`, the
    other filter columns as trailing key columns (portable: no INCLUDE outside PostgreSQL)."""
    rest = [column for column in FILTER_COLUMNS if column not in leading] if covering else []
    return Index(name, *leading, "occurred_at", "id", *rest)


class Base(DeclarativeBase):
    pass


class Wallet(Base):
    __tablename__ = "wallets"

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(100), unique=True)
    chain: Mapped[str] = mapped_column(String(20))
    name: Mapped[str] = mapped_column(String(100))


def utc_now() -> dt.datetime:
    """The current time, aware UTC with microseconds."""
    return dt.datetime.now(dt.timezone.utc)


# Column defaults that the app module gives, by "table.column": each app passes its mapping
# to its engine as this execution option (fixed/app.py `COLUMN_DEFAULTS`). The models are
# shared by every variant, and a default is exactly what one broken variant gets wrong: the
# app states it, in its own code, in the shape a model would (`default=...`), and
# `app_default` applies it by SQLAlchemy's own rule for `Column(default=...)`.
COLUMN_DEFAULTS_OPTION = "lab_column_defaults"


def app_default(key: str) -> Callable[[Any], Any]:
    """A Python-side column default (SQLAlchemy calls it once per inserted row that does not
    name the column) that returns the app's default for `key`, by `Column(default=...)`'s rule:
    a callable is called for every row, anything else is that one value for every row. Without
    an app default (a script's own engine) the current time."""

    def default(context: Any) -> Any:
        given = context.execution_options.get(COLUMN_DEFAULTS_OPTION, {}).get(key, utc_now)
        return given() if callable(given) else given

    default.__name__ = f"app_default_{key.replace('.', '_')}"
    return default


class Contact(Base):
    __tablename__ = "contacts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(CONTACT_TEXT_MAX_LENGTH), unique=True)
    address: Mapped[Optional[str]] = mapped_column(String(CONTACT_TEXT_MAX_LENGTH))
    # When the contact was added (UTC, microseconds); the app gives its default (above).
    created_at: Mapped[dt.datetime] = mapped_column(UTCDateTime(), default=app_default("contacts.created_at"))


class AssetPrice(Base):
    """A reference table the app keeps in memory and refreshes (lab/prices.py): USD per asset."""

    __tablename__ = "asset_prices"

    symbol: Mapped[str] = mapped_column(String(16), primary_key=True)  # the key: no secondary index
    usd_price: Mapped[Decimal] = mapped_column(ExactDecimal())
    updated_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())


class Transaction(Base):
    __tablename__ = "transactions"
    __table_args__ = (
        # One row per leg: a swap has an outgoing and an incoming leg under one hash.
        UniqueConstraint("wallet_id", "tx_hash", "type", "asset_symbol", name="uq_transactions_leg"),
        CheckConstraint(f"type IN {TRANSACTION_TYPES}", name="ck_transactions_type"),
        CheckConstraint("version >= 1", name="ck_transactions_version"),
        CheckConstraint("label IS NULL OR label <> ''", name="ck_transactions_label_not_empty"),
        # The list page, newest first with id breaking ties (lab/INDEXES.md has the plans):
        # the whole list, one wallet, one asset, one label (or none), one contact and one type
        # each in that order; the first four also carry every other filter column, so any
        # combination of filters is checked inside one index, without reading the table.
        _newest_index("ix_transactions_newest"),
        _newest_index("ix_transactions_wallet_newest", "wallet_id"),
        _newest_index("ix_transactions_asset_newest", "asset_symbol"),
        _newest_index("ix_transactions_label_newest", "label"),
        _newest_index("ix_transactions_contact_newest", "contact_id", covering=False),
        _newest_index("ix_transactions_type_newest", "type", covering=False),
        # "label contains" beyond the distinct labels queries.labels_containing walks: the
        # rows are filtered with `lower(label) LIKE`, so a trigram index of that very
        # expression, PostgreSQL only (pg_trgm; see TRIGRAM_EXTENSION). An index of `label`
        # itself serves `label ILIKE`, not this: the planner never used it (lab/INDEXES.md).
        Index("ix_transactions_label_lower_trgm", text("lower(label) gin_trgm_ops"),
              postgresql_using="gin").ddl_if(dialect="postgresql"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    tx_hash: Mapped[str] = mapped_column(String(100))
    wallet_id: Mapped[int] = mapped_column(ForeignKey("wallets.id", ondelete="RESTRICT"))
    type: Mapped[str] = mapped_column(String(4))
    asset_symbol: Mapped[str] = mapped_column(String(20))
    amount: Mapped[Decimal] = mapped_column(ExactDecimal())
    occurred_at: Mapped[dt.datetime] = mapped_column(UTCDateTime())
    label: Mapped[Optional[str]] = mapped_column(_label_type())
    contact_id: Mapped[Optional[int]] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"))
    # Bumped by every edit; an edit must name the version it saw (optimistic locking).
    version: Mapped[int] = mapped_column(default=1)

    # Loaded explicitly by the list query (one statement per page, never one per row).
    wallet: Mapped[Wallet] = relationship(lazy="raise_on_sql")
    contact: Mapped[Optional[Contact]] = relationship(lazy="raise_on_sql")

    @validates("label")
    def _empty_label_is_null(self, _key: str, label: str | None) -> str | None:
        return label or None

    def __repr__(self) -> str:
        return f"<Transaction {self.id} v{self.version} label={self.label!r}>"


# The trigram operator class of ix_transactions_label_lower_trgm comes from the pg_trgm extension.
# It is "trusted" since PostgreSQL 13: the owner of the database may create it, no superuser
# needed (the lab's role owns its databases). Made with the table, so `init-db` needs no step.
TRIGRAM_EXTENSION = DDL("CREATE EXTENSION IF NOT EXISTS pg_trgm").execute_if(dialect="postgresql")
event.listen(Transaction.__table__, "before_create", TRIGRAM_EXTENSION)
