"""The floor's own encoding: the page's JSON built straight from what the driver returned.

The floor of a page request is what no app could do without: the same statements on a plain
DBAPI connection, every row fetched, and the response encoded. For the JSON page that is the
very body `/api/transactions` answers, byte for byte (tests/test_bench_floor.py compares
them), built from the driver's tuples with no ORM, no Flask and no type objects: a dict per
row, the timestamp and amount turned into the app's strings, `json.dumps` as Flask calls it.
For the HTML page it is the same data plus the contacts, encoded as JSON: the page's data with
no template around it (the HTML target allows 3x this floor, the JSON one 2x).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import operator
import re
from typing import Any, Sequence

from bench.explain import statement_role
from lab.queries import COUNT_CAP, Cursor

# One statement's result: its SQL, its column names (the cursor's description), its rows.
Result = tuple[str, Sequence[str], Sequence[Sequence[Any]]]

_TRANSACTION = ("id", "version", "tx_hash", "type", "asset_symbol", "amount", "occurred_at", "label")
# An item of the page statement's select list: `transactions.id`, `wallets.address AS
# wallet_address`, ... (positions come from the SQL, not from the driver's column names,
# which a statement may label or deduplicate as it likes).
_SELECTED = re.compile(r'^[`"]?(transactions|wallets|contacts)(?:_\d+)?[`"]?\.[`"]?(\w+)[`"]?(?:\s+AS\s+\S+)?$')


@functools.lru_cache(maxsize=256)
def _columns(sql: str) -> dict[tuple[str, str], int]:
    """(table, column) -> position in the rows, from the outer select list of the page's SQL."""
    select_list = re.split(r"\s+FROM\s+", sql.strip(), maxsplit=1)[0]
    select_list = re.sub(r"^SELECT\s+", "", select_list)
    found = {}
    for position, item in enumerate(part.strip() for part in select_list.split(",")):
        match = _SELECTED.match(item)
        if match:
            found.setdefault((match[1], match[2]), position)
    return found


def _naive(value: Any) -> dt.datetime:
    """The driver's naive UTC timestamp (SQLite gives it as text)."""
    return dt.datetime.fromisoformat(value) if isinstance(value, str) else value


def page_data(page: Result, count: Result, limit: int) -> dict[str, Any]:
    """The JSON page (lab.web.page_dict's shape) from the page's and the count's raw rows."""
    sql, _names, rows = page
    at = _columns(sql)
    transaction = operator.itemgetter(*(at[("transactions", column)] for column in _TRANSACTION))
    wallet = operator.itemgetter(*(at[("wallets", column)] for column in ("address", "chain", "name")))
    contact = operator.itemgetter(at[("transactions", "contact_id")], at[("contacts", "name")])
    items = []
    for row in rows[:limit]:
        row_id, version, tx_hash, kind, asset, amount, occurred_at, label = transaction(row)
        address, chain, name = wallet(row)
        contact_id, contact_name = contact(row)
        items.append({
            "id": row_id, "version": version, "tx_hash": tx_hash,
            "wallet": {"address": address, "chain": chain, "name": name},
            "type": kind, "asset": asset, "amount": str(amount),
            "occurred_at": _naive(occurred_at).isoformat() + "Z",
            "label": label,
            "contact": {"id": contact_id, "name": contact_name} if contact_id is not None else None,
        })
    next_cursor = None
    if len(rows) > limit:
        last = transaction(rows[limit - 1])
        next_cursor = Cursor(_naive(last[6]).replace(tzinfo=dt.timezone.utc), last[0]).encode()
    total = int(count[2][0][0])
    return {"items": items, "next_cursor": next_cursor, "limit": limit,
            "total": {"count": min(total, COUNT_CAP), "capped": total > COUNT_CAP}}


def _dumps(data: Any) -> bytes:
    # As Flask's DefaultJSONProvider answers outside debug mode: sorted keys, ASCII, compact.
    return (json.dumps(data, ensure_ascii=True, sort_keys=True, separators=(",", ":")) + "\n").encode()


def _split(results: list[Result]) -> tuple[Result | None, Result | None, Result | None]:
    """The page, the count and the contacts among a request's results (any may be absent: a
    "label contains" that no label matches sends the distinct labels alone)."""
    found: dict[str, Result] = {}
    for result in results:
        if result[1]:
            found.setdefault(statement_role(result[0]), result)
    return found.get("page"), found.get("count"), found.get("contacts")


def _page_or_empty(page: Result | None, count: Result | None, limit: int) -> dict[str, Any]:
    if page is None or count is None:  # no query ran: the app answers an empty page
        return {"items": [], "next_cursor": None, "limit": limit, "total": {"count": 0, "capped": False}}
    return page_data(page, count, limit)


def json_page(results: list[Result], limit: int) -> bytes:
    """The body of /api/transactions."""
    page, count, _ = _split(results)
    return _dumps(_page_or_empty(page, count, limit))


def html_page_data(results: list[Result], limit: int) -> bytes:
    """What the HTML page shows, encoded as JSON: the page and the contacts."""
    page, count, contacts = _split(results)
    if contacts is None:
        raise ValueError("the HTML page's statements have no contacts")
    return _dumps({"page": _page_or_empty(page, count, limit),
                   "contacts": [{"id": c[0], "name": c[1]} for c in contacts[2]]})
