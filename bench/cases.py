"""The fixed list of filter combinations and page depths the benchmark measures.

Every case is a query string of /api/transactions, as a user's browser would send it, so the
app parses it exactly as in production. Expected shares come from the distribution stated in
lab/seed.py (about 1.75 rows per event; 40% of rows labelled with one of 14 labels; contacts
on ~30% of in/out rows): they say why a case is there, the benchmark counts the real matches.

Depths: the first page, the 100th, and the 10,000th for filters matching at least 500,000
rows (page size 50). A deep keyset page needs the cursor a user would hold there: it is the
(occurred_at, id) of the last row of the previous page, read directly from the database with
OFFSET once (walking 10,000 pages would only cost time).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session
from werkzeug.datastructures import MultiDict

from lab import queries, seed, web
from lab.models import Transaction

PAGE_SIZE = 50
FIRST, HUNDREDTH, TEN_THOUSANDTH = 1, 100, 10_000
DEEP_PAGE_MIN_MATCHES = 500_000

_wallets = seed.reference_data().wallets
WALLET_1 = _wallets[0]["address"]  # ethereum
SEVERAL_WALLETS = [w["address"] for w in _wallets[:3]]  # ethereum, bitcoin, solana: ~25% of rows


@dataclass(frozen=True)
class Case:
    name: str
    params: dict[str, Any]  # query-string parameters (lists repeat the key)
    why: str

    def query(self, **more: Any) -> MultiDict[str, str]:
        pairs: list[tuple[str, str]] = []
        for key, value in {**self.params, **more}.items():
            for item in value if isinstance(value, list) else [value]:
                pairs.append((key, str(item)))
        return MultiDict(pairs)


CASES: tuple[Case, ...] = (
    Case("no filter", {}, "the whole table, newest first"),
    Case("one wallet", {"wallet": WALLET_1}, "~8% of rows; the wallet index"),
    Case("several wallets", {"wallet": SEVERAL_WALLETS}, "~25%; an IN list over the wallet index"),
    Case("type", {"type": "fee"}, "~31% of rows (one fee leg per out and swap event)"),
    Case("asset", {"asset": "DAI"}, "~1.5%: a rare asset, the asset index"),
    Case("label exact", {"label": "salary"}, "~3%: the label index"),
    Case("label contains", {"label_contains": "exchange"}, "~6% (two labels): no B-tree can serve it"),
    Case("label contains, no match", {"label_contains": "mortgage"}, "0 rows: the worst case of a contains search"),
    Case("unlabelled", {"unlabelled": "1"}, "~60%: label IS NULL"),
    Case("contact", {"contact": 7}, "~0.35%: the contact index"),
    Case("date range, one month", {"from": "2025-06-01", "to": "2025-07-01"}, "~4%: a range of the sort key"),
    Case("date range, 13 months", {"from": "2024-12-01", "to": "2026-01-01"}, "~54%: a wide range of the sort key"),
    Case("wallet + type", {"wallet": WALLET_1, "type": "out"}, "~1.6%"),
    Case("type + asset", {"type": "in", "asset": "USDC"}, "~4%"),
    Case("several wallets + one month", {"wallet": SEVERAL_WALLETS, "from": "2025-06-01", "to": "2025-07-01"}, "~1%"),
    Case("label contains + 13 months", {"label_contains": "exchange", "from": "2024-12-01", "to": "2026-01-01"}, "~3%"),
    Case("asset + unlabelled", {"asset": "ETH", "unlabelled": "1"}, "~20%"),
)


@dataclass(frozen=True)
class Position:
    """One page of one case: what the keyset request sends and what the OFFSET one sends."""

    depth: int  # page number, from 1
    cursor: str | None  # None for the first page

    def keyset_query(self, case: Case) -> MultiDict[str, str]:
        return case.query(limit=PAGE_SIZE, **({"cursor": self.cursor} if self.cursor else {}))

    def offset_query(self, case: Case) -> MultiDict[str, str]:
        return case.query(limit=PAGE_SIZE, page=self.depth)


def matches(session: Session, case: Case) -> int:
    """The exact number of rows the case matches (once per case, never timed)."""
    filters = web.filters_from(case.query())
    statement = queries._filtered(select(func.count()).select_from(Transaction), filters)
    return int(session.scalar(statement) or 0)


def depths(total: int, shallow: tuple[int, ...] = (FIRST, HUNDREDTH), deep: int = TEN_THOUSANDTH,
           deep_min_matches: int = DEEP_PAGE_MIN_MATCHES) -> list[int]:
    """The pages of one case: each of `shallow` that exists (the 100th needs more than
    99 * 50 matches), and `deep` when the filter matches at least `deep_min_matches` rows."""
    chosen = {FIRST} | {d for d in shallow if total > (d - 1) * PAGE_SIZE}
    if total >= deep_min_matches and total > (deep - 1) * PAGE_SIZE:
        chosen.add(deep)
    return sorted(chosen)


def position(session: Session, case: Case, depth: int) -> Position:
    """The cursor a user holds on arriving at page `depth`: the last row of page depth-1."""
    if depth == FIRST:
        return Position(depth, None)
    filters = web.filters_from(case.query())
    last_of_previous = queries.newest_first(
        queries._filtered(select(Transaction.occurred_at, Transaction.id), filters), None
    ).offset((depth - 1) * PAGE_SIZE - 1).limit(1)
    row = session.execute(last_of_previous).one()  # depths() only asks for pages that exist
    stamp: dt.datetime = row[0]
    return Position(depth, queries.Cursor(stamp, int(row[1])).encode())
