"""The statements behind the transactions page and its edits, shared by every variant.

Every function takes the Session to use: which session that is, and when it ends, is exactly
what the broken variants get wrong and the fixed app gets right, so it is never decided here.
"""

from __future__ import annotations

import base64
import binascii
import functools
import datetime as dt
import json
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

from sqlalchemy import ColumnElement, Integer, Row, Select, Subquery, bindparam, func, literal, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, joinedload

from lab.engine import locking_write_options
from lab.models import LABEL_MAX_LENGTH, MAX_INTEGER, Contact, Transaction, Wallet

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
# Counting every match of a broad filter on a large table costs a full scan per page view;
# the page only needs to know "how many, up to this many" (shown as "10,000+").
COUNT_CAP = 10_000


class NotFound(LookupError):
    """No such row."""


class UnknownContact(ValueError):
    """The edit names a contact that does not exist."""


class ContactExists(ValueError):
    """A new contact's name is taken (names are unique)."""


class NoteDoesNotFit(ValueError):
    """The label with the note appended would be longer than a label may be."""


class UnknownWallet(ValueError):
    """A wallet id the user chose that no wallet has."""


class VersionConflict(Exception):
    """The row changed since the client read it: the edit is refused and changes nothing."""

    def __init__(self, current_version: int) -> None:
        super().__init__(f"the row is at version {current_version}")
        self.current_version = current_version


@dataclass(frozen=True)
class Cursor:
    """Where the next page starts: after this (occurred_at, id) in newest-first order."""

    occurred_at: dt.datetime
    id: int

    def encode(self) -> str:
        raw = json.dumps([self.occurred_at.isoformat(), self.id]).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    @classmethod
    def decode(cls, token: str) -> "Cursor":
        """Raises ValueError when the token is not one this app produced."""
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
            stamp, row_id = json.loads(raw)
            occurred_at = dt.datetime.fromisoformat(stamp)
            if occurred_at.tzinfo is not None:
                occurred_at.astimezone(dt.timezone.utc)  # OverflowError before year 1 in UTC
        except (binascii.Error, ValueError, TypeError, UnicodeDecodeError, OverflowError) as error:
            raise ValueError("not a cursor returned by this API") from error
        # An id beyond INTEGER would reach SQL as an out-of-range parameter (a 500).
        if occurred_at.tzinfo is None or type(row_id) is not int or not 0 < row_id <= MAX_INTEGER:
            raise ValueError("not a cursor returned by this API")
        return cls(occurred_at, row_id)


@dataclass(frozen=True)
class Filters:
    """What the user asked for; every field is optional and they combine with AND."""

    wallets: tuple[str, ...] = ()
    type: str | None = None
    asset: str | None = None
    label: str | None = None
    label_contains: str | None = None
    # Not a parameter: what list_page resolved label_contains to, the distinct labels that
    # contain it (label IN these); None when not resolved (label_contains is then a LIKE).
    label_in: tuple[str, ...] | None = None
    unlabelled: bool = False
    contact_id: int | None = None
    date_from: dt.datetime | None = None  # inclusive
    date_to: dt.datetime | None = None  # exclusive
    limit: int = DEFAULT_PAGE_SIZE
    cursor: Cursor | None = None


# One row of a list: the Transaction entity, and the wallet and contact columns the list shows
# (`row.Transaction`, `row.wallet_address`, `row.wallet_chain`, `row.wallet_name`,
# `row.contact_name`). See `_with_wallet_and_contact`.
ListRow = Row[tuple[Transaction, str, str, str, Optional[str]]]


@dataclass
class Page:
    rows: Sequence[ListRow]
    next_cursor: Cursor | None
    total: int  # capped at COUNT_CAP
    total_capped: bool = field(default=False)


def _filtered(statement: Select, filters: Filters) -> Select:
    if filters.wallets:
        # One scalar subquery per address, `wallet_id IN ((SELECT id ... = :a1), ...)`, rather
        # than `wallet_id IN (SELECT id ... IN (:a1, ...))`: MariaDB turns the latter into a
        # join driven by wallets and sorts every row of those wallets (over 5 s for three
        # wallets at 1M rows); each scalar subquery is a single-row constant to all three
        # planners, so the page keeps reading an index in the list's order (lab/INDEXES.md).
        wallet_ids = [select(Wallet.id).where(Wallet.address == address).scalar_subquery()
                      for address in dict.fromkeys(filters.wallets)]
        statement = statement.where(Transaction.wallet_id.in_(wallet_ids))
    if filters.type is not None:
        statement = statement.where(Transaction.type == filters.type)
    if filters.asset is not None:
        statement = statement.where(Transaction.asset_symbol == filters.asset)
    if filters.label is not None:
        statement = statement.where(Transaction.label == filters.label)
    if filters.label_in is not None and len(filters.label_in) == 1:
        statement = statement.where(Transaction.label == filters.label_in[0])
    elif filters.label_in is not None:
        statement = statement.where(Transaction.label.in_(filters.label_in))
    elif filters.label_contains is not None:
        # A user's % and _ are literal characters, not wildcards (_contains_pattern).
        statement = statement.where(_contains(Transaction.label, _contains_pattern(filters.label_contains)))
    if filters.unlabelled:
        statement = statement.where(Transaction.label.is_(None))
    if filters.contact_id is not None:
        statement = statement.where(Transaction.contact_id == filters.contact_id)
    if filters.date_from is not None:
        statement = statement.where(Transaction.occurred_at >= filters.date_from)
    if filters.date_to is not None:
        statement = statement.where(Transaction.occurred_at < filters.date_to)
    return statement


def _contains(label: ColumnElement[str | None], pattern: ColumnElement[str] | str) -> ColumnElement[bool]:
    """`label` contains the text of `pattern` (made by `_contains_pattern`), case-insensitively.
    SQLite's lower() is replaced by Python's on every connection (lab/engine.py), so "CAFÉ"
    finds "Café" there as on the servers."""
    return func.lower(label).like(pattern, escape="/")


def _contains_pattern(needle: str) -> str:
    """The LIKE pattern of "contains `needle`": lowered in Python, and the user's %, _ (and the
    escape character itself) made literal, as SQLAlchemy's icontains(autoescape=True) does."""
    escaped = needle.lower().replace("/", "//").replace("%", "/%").replace("_", "/_")
    return f"%{escaped}%"


# "Label contains" at 1M rows: no B-tree can find the rows whose label contains a text, and
# the whole-table LIKE reads every row (its cost at 1M rows: lab/INDEXES.md, "Label
# contains", measured by `make bench`). But labels repeat: the 1M-row data set has 14 distinct ones. So the page first reads
# the distinct labels from ix_transactions_label_newest, one index probe per label, keeps
# those that contain the text, and filters the rows with `label IN (those)`: an exact-match
# filter that the label and covering indexes serve, with the same rows as LIKE on every row,
# by construction. No label contains it: no row query at all. Beyond this many distinct labels
# the walk stops and the rows are filtered with LIKE (PostgreSQL's trigram index serves that).
DISTINCT_LABELS_READ = 1_000


@functools.cache
def _labels_containing_statement(dialect: str) -> Select:
    """Up to :rows distinct non-null labels, each found by an index probe, with whether each
    contains :pattern. Built once per dialect (a statement is immutable): building the
    recursive walk anew cost more than running it."""
    rows = bindparam("rows", type_=Integer)
    if dialect in ("mysql", "mariadb"):
        # MariaDB's loose index scan ("Using index for group-by"): a GROUP BY on the first
        # column of an index jumps from group to group. (It runs the walk below as a full
        # index scan per step: lab/INDEXES.md times both at 1M rows.)
        labels = (select(Transaction.label).where(Transaction.label.is_not(None))
                  .group_by(Transaction.label).limit(rows)).subquery("labels")
    else:
        # PostgreSQL and SQLite have no loose index scan, so it is written out: a recursive
        # walk whose every step is "the first label after this one", a one-entry index probe.
        later = aliased(Transaction)
        walk = select(func.min(Transaction.label).label("label"), literal(1).label("n")).cte("walk", recursive=True)
        next_label = (select(later.label).where(later.label > walk.c.label)
                      .order_by(later.label).limit(1).scalar_subquery())
        walk = walk.union_all(select(next_label, walk.c.n + 1)
                              .where(walk.c.label.is_not(None), walk.c.n < rows))
        labels = select(walk.c.label).where(walk.c.label.is_not(None)).subquery("labels")
    return select(labels.c.label, _contains(labels.c.label, bindparam("pattern")))


def labels_containing(session: Session, needle: str) -> tuple[str, ...] | None:
    """The distinct labels that contain `needle` (as the LIKE filter matches rows), or None
    when the table holds more than DISTINCT_LABELS_READ distinct labels."""
    statement = _labels_containing_statement(session.get_bind().dialect.name)
    found = session.execute(statement, {"pattern": _contains_pattern(needle), "rows": DISTINCT_LABELS_READ + 1}).all()
    if len(found) > DISTINCT_LABELS_READ:
        return None
    return tuple(label for label, contains in found if contains)


def newest_first(statement: Select, cursor: Cursor | None) -> Select:
    """Keyset pagination: rows strictly after the cursor, newest first, id breaking ties.

    "After (t, i)" is `occurred_at < t OR (occurred_at = t AND id < i)`, written as
    `occurred_at <= t AND (occurred_at < t OR id < i)`: the same rows, but the first term is a
    plain range that all three backends turn into an index range. PostgreSQL reads the bare
    OR form as a filter over every row newer than the cursor; MariaDB does the same with the
    row-value form `(occurred_at, id) < (t, i)`. lab/INDEXES.md shows the plans of the three
    forms on each backend, and their times at 1M rows (`make bench`).
    """
    if cursor is not None:
        statement = statement.where(
            Transaction.occurred_at <= cursor.occurred_at,
            or_(Transaction.occurred_at < cursor.occurred_at, Transaction.id < cursor.id),
        )
    return statement.order_by(Transaction.occurred_at.desc(), Transaction.id.desc())


def _without_redundant_end(filters: Filters) -> Filters:
    """The filters of a page, without `to` when the cursor lies before it (the same rows).

    Every row after a cursor older than `to` is before `to` already. Left in, the condition
    gives the index range two upper bounds, and SQLite bounds the range by one of them only:
    it took `to` and read 500,000 index entries for the 10,000th page of a 13-month range.
    """
    if filters.cursor is not None and filters.date_to is not None and filters.cursor.occurred_at < filters.date_to:
        return replace(filters, date_to=None)
    return filters


def _page_ids(filters: Filters) -> Subquery:
    """The ids of the page, in list order: filters, keyset, LIMIT page size + 1. "Label
    contains" is `label IN (its labels)` here as it is: one range of the label index per
    label, merged by hand with UNION ALL, was measured no faster on any backend
    (lab/INDEXES.md, "Label contains")."""
    statement = newest_first(_filtered(select(Transaction.id), _without_redundant_end(filters)), filters.cursor)
    return statement.limit(filters.limit + 1).subquery("page_ids")


def list_page(session: Session, filters: Filters) -> Page:
    """One page of transactions and a capped count: two statements whatever the page size
    (three for "label contains": its distinct labels first).

    The page is a "deferred join": the inner query finds the ids of the page (filters, keyset,
    order, limit) from an index alone where one covers the filter, and only those rows are
    then read with their wallet and contact. Same rows, same order; but MariaDB, asked for
    whole rows, prefers a `ref` scan of `type = 'fee'` from its newest entry over the range
    that starts at the cursor, and reads every row newer than the cursor (lab/INDEXES.md).
    """
    if filters.label_contains is not None and filters.label_in is None:
        labels = labels_containing(session, filters.label_contains)
        if labels == ():
            return Page([], None, 0)  # no label contains it: no row can match
        filters = replace(filters, label_in=labels)
    page_ids = _page_ids(filters)
    page_statement = _with_wallet_and_contact(
        select(Transaction).join(page_ids, Transaction.id == page_ids.c.id)
    ).order_by(Transaction.occurred_at.desc(), Transaction.id.desc())
    rows = session.execute(page_statement).all()
    has_more = len(rows) > filters.limit
    rows = rows[: filters.limit]
    next_cursor = Cursor(rows[-1].Transaction.occurred_at, rows[-1].Transaction.id) if has_more else None
    total = _capped_count(session, filters)
    return Page(rows, next_cursor, min(total, COUNT_CAP), total_capped=total > COUNT_CAP)


def _with_wallet_and_contact(statement: Select) -> Select:
    """A list statement of Transaction entities, plus the wallet's address, chain and name and
    the contact's name, in the same row: one statement per page, as `joinedload` gives, but
    one ORM object per row instead of three (a Transaction, its Wallet, its Contact), which
    cut the page's loading time by a fifth. The rows stay ORM entities on purpose: what a
    session does with them (identity map, expiry, detaching) is what this lab is about."""
    return (statement.add_columns(Wallet.address.label("wallet_address"), Wallet.chain.label("wallet_chain"),
                                  Wallet.name.label("wallet_name"), Contact.name.label("contact_name"))
            .join(Wallet, Transaction.wallet_id == Wallet.id)
            .outerjoin(Contact, Transaction.contact_id == Contact.id))


def get_transaction(session: Session, tx_id: int) -> Transaction:
    if not 0 < tx_id <= MAX_INTEGER:  # no such row; beyond INTEGER, SQL would fail instead
        raise NotFound(f"no transaction with id {tx_id}")
    row = session.scalars(
        select(Transaction)
        .where(Transaction.id == tx_id)
        .options(joinedload(Transaction.wallet), joinedload(Transaction.contact))
        .execution_options(populate_existing=True)
    ).one_or_none()
    if row is None:
        raise NotFound(f"no transaction with id {tx_id}")
    return row


def _conditional_update(session: Session, tx_id: int, seen_version: int, **values: object) -> Transaction:
    # One statement decides: it changes the row only if nobody changed it since the client
    # read it. Two concurrent edits from the same version cannot both succeed.
    if not 0 < tx_id <= MAX_INTEGER:  # the id comes from the URL: no row, not a SQL error
        raise NotFound(f"no transaction with id {tx_id}")
    result = session.execute(
        update(Transaction)
        .where(Transaction.id == tx_id, Transaction.version == seen_version)
        .values(version=Transaction.version + 1, **values)
        .execution_options(synchronize_session=False)
    )
    row = get_transaction(session, tx_id)  # raises NotFound for an unknown id
    if result.rowcount != 1:
        raise VersionConflict(row.version)
    return row


def update_label(session: Session, tx_id: int, label: str | None, seen_version: int) -> Transaction:
    """Set the label (None or "" clears it) if the row is still at `seen_version`."""
    return _conditional_update(session, tx_id, seen_version, label=label or None)


def update_contact(session: Session, tx_id: int, contact_id: int | None, seen_version: int) -> Transaction:
    """Associate a contact (None clears it) if the row is still at `seen_version`."""
    # No existence check before the UPDATE: a read first would make SQLite's writer fail on
    # an old snapshot instead of waiting. The foreign key refuses an unknown contact.
    try:
        return _conditional_update(session, tx_id, seen_version, contact_id=contact_id)
    except IntegrityError as error:
        raise UnknownContact(f"no contact with id {contact_id}") from error


def add_contact(session: Session, name: str, address: str | None) -> Contact:
    """Insert a contact; its `created_at` is the column default's (the app's, lab/models.py).
    Flushed here, so the id and the default are known before the caller commits."""
    contact = Contact(name=name, address=address)
    session.add(contact)
    try:
        session.flush()
    except IntegrityError as error:  # the unique name; the caller's rollback undoes the rest
        raise ContactExists(f"a contact named {name!r} exists already") from error
    return contact


NOTE_SEPARATOR = "; "


def with_note(label: str | None, note: str) -> str | None:
    """`label` with `note` appended ("rent" + "tax" -> "rent; tax"), or None when the label
    already has that note (the merge is idempotent)."""
    notes = label.split(NOTE_SEPARATOR) if label else []
    if note in notes:
        return None
    merged = NOTE_SEPARATOR.join([*notes, note])
    if len(merged) > LABEL_MAX_LENGTH:
        raise NoteDoesNotFit(f"the label with this note would be {len(merged)} characters, "
                             f"at most {LABEL_MAX_LENGTH} fit")
    return merged


def lock_transaction(session: Session, tx_id: int) -> Transaction:
    """`SELECT ... FOR UPDATE` of one row: waits for any other writer of it, then returns it."""
    return session.scalars(
        select(Transaction).where(Transaction.id == tx_id).with_for_update()
        # FIX: the row is already in the identity map (the caller read it before locking):
        # without this the session returns that object with the attributes it loaded then,
        # and ignores the newer row the lock returned.
        .execution_options(populate_existing=True)
    ).one()


def append_note(session: Session, tx_id: int, note: str) -> Transaction:
    """Append `note` to the row's label, unless it is there already; returns the row (at a new
    version when it changed).

    A merge, so it does not take the version the user saw: a note applies to the label as it
    is when it is written, whoever edited it since, and refusing it (409) would only make the
    user send it again. It must therefore lose no concurrent edit: the row is read first (404,
    and an already-noted label answers without any lock or write), then locked, and the new
    label is computed from what the locking read returned, under the lock.
    """
    session.connection(execution_options=locking_write_options(session.get_bind().dialect.name))
    row = get_transaction(session, tx_id)  # raises NotFound before taking any lock
    if with_note(row.label, note) is None:
        return row
    row = lock_transaction(session, tx_id)
    merged = with_note(row.label, note)
    if merged is not None:
        row.label = merged
        row.version = row.version + 1
        session.flush()
    return get_transaction(session, tx_id)  # with its wallet and contact, as written


def list_contacts(session: Session) -> Sequence[Row[tuple[int, str]]]:
    """Every contact's id and name, by name: the page's contact choices. Plain rows (`.id`,
    `.name`), not Contact objects: nothing on the page edits a contact, so the identity map
    has nothing to track, and 40 rows cost a third of what 40 objects do."""
    return session.execute(select(Contact.id, Contact.name).order_by(Contact.name)).all()


def wallets_by_id(session: Session, ids: Sequence[int], *, skip_missing: bool = False) -> list[Wallet]:
    """The wallets with these ids, in the order given, in one statement. An id no wallet has
    raises UnknownWallet naming it, or (skip_missing, for ids chosen earlier) is left out."""
    if not ids:
        return []
    found = {w.id: w for w in session.scalars(select(Wallet).where(Wallet.id.in_([i for i in ids if 0 < i <= MAX_INTEGER])))}
    missing = [wallet_id for wallet_id in ids if wallet_id not in found]
    if missing and not skip_missing:
        raise UnknownWallet(f"no wallet with id {missing[0]}")
    return [found[wallet_id] for wallet_id in ids if wallet_id in found]


# ---- OFFSET pagination: the broken way, kept for the offset_pagination lesson and the benchmark

MAX_OFFSET_PAGE = 1_000_000  # far beyond any real list; keeps OFFSET inside every backend's integer range


@dataclass
class OffsetPage:
    """One numbered page, counted with OFFSET (see `list_page_offset`)."""

    rows: Sequence[ListRow]
    number: int  # from 1
    has_more: bool
    total: int  # capped at COUNT_CAP
    total_capped: bool = field(default=False)


def list_page_offset(session: Session, filters: Filters, page_number: int) -> OffsetPage:
    """Page `page_number` (from 1) of the same newest-first list, skipped to with OFFSET.

    What keyset pagination (`list_page`) avoids: OFFSET counts positions in the list as it is
    when the page is read, not as it was when the user saw the previous page. A row committed
    above meanwhile pushes rows of the previous page onto this one (they repeat); a row that
    leaves the filter pulls rows of this page onto the previous one (they are on no page). The
    database also reads and discards every skipped row, so deep pages get slower.
    `filters.cursor` is ignored.
    """
    if not 1 <= page_number <= MAX_OFFSET_PAGE:
        raise ValueError(f"page_number must be between 1 and {MAX_OFFSET_PAGE}, not {page_number}")
    statement = _with_wallet_and_contact(newest_first(_filtered(select(Transaction), filters), None))
    offset = (page_number - 1) * filters.limit
    rows = session.execute(statement.offset(offset).limit(filters.limit + 1)).all()
    total = _capped_count(session, filters)
    return OffsetPage(rows[: filters.limit], page_number, len(rows) > filters.limit,
                      min(total, COUNT_CAP), total_capped=total > COUNT_CAP)


def capped_count_statement(filters: Filters) -> Select:
    """`count(*)` of the rows that match, stopping at COUNT_CAP + 1."""
    matches = _filtered(select(Transaction.id), filters).limit(COUNT_CAP + 1).subquery()
    return select(func.count()).select_from(matches)


def _capped_count(session: Session, filters: Filters) -> int:
    """How many rows match, counted up to COUNT_CAP + 1: the count of both kinds of page."""
    return session.scalar(capped_count_statement(filters)) or 0
