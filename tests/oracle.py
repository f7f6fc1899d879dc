"""Helpers for the app tests: an independent oracle over the seed, page walkers, HTML parsing.

The oracle never asks the app or the database what should match: it filters the rows of
`lab.seed.transactions(300)` (exactly what the `app` fixture seeds) in plain Python and sorts
them newest first, id breaking ties. Tests compare that with what the app returns.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
from html.parser import HTMLParser
from typing import Any, Iterable
from urllib.parse import urlsplit

from sqlalchemy import Engine, text

from lab import seed
from tests.conftest import TEST_SEED_SIZE

SEED_ROWS: list[dict[str, Any]] = list(seed.transactions(TEST_SEED_SIZE))
REFERENCE = seed.reference_data()
WALLET_ADDRESS = {w["id"]: w["address"] for w in REFERENCE.wallets}
ROW_BY_ID = {row["id"]: row for row in SEED_ROWS}


def newest_first(rows: Iterable[dict[str, Any]]) -> list[int]:
    return [r["id"] for r in sorted(rows, key=lambda r: (r["occurred_at"], r["id"]), reverse=True)]


def expected_ids(
    rows: Iterable[dict[str, Any]] = SEED_ROWS,
    *,
    wallet_ids: Iterable[int] = (),
    type: str | None = None,
    asset: str | None = None,
    label: str | None = None,
    label_contains: str | None = None,
    unlabelled: bool = False,
    contact: int | None = None,
    date_from: dt.datetime | None = None,
    date_to: dt.datetime | None = None,
) -> list[int]:
    """The ids the app must return for these filters, in the app's order."""
    wallet_ids = set(wallet_ids)

    def keep(r: dict[str, Any]) -> bool:
        return (
            (not wallet_ids or r["wallet_id"] in wallet_ids)
            and (type is None or r["type"] == type)
            and (asset is None or r["asset_symbol"] == asset)
            and (label is None or r["label"] == label)
            and (label_contains is None or (r["label"] is not None and label_contains.lower() in r["label"].lower()))
            and (not unlabelled or r["label"] is None)
            and (contact is None or r["contact_id"] == contact)
            and (date_from is None or r["occurred_at"] >= date_from)
            and (date_to is None or r["occurred_at"] < date_to)
        )

    return newest_first(r for r in rows if keep(r))


def parse_stamp(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def decode_cursor(token: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))


# ---- walking pages -----------------------------------------------------------------------

def walk_api(client: Any, params: dict[str, Any] | list[tuple[str, str]], limit: int | None = None) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Every item of every page of /api/transactions, checking the page contract on the way.

    Returns (items, total) where total is the `total` object (the same on every page).
    """
    base = list(params.items()) if isinstance(params, dict) else list(params)
    if limit is not None:
        base.append(("limit", str(limit)))
    items: list[dict[str, Any]] = []
    totals = []
    cursor = None
    for _ in range(10_000):
        query = base + ([("cursor", cursor)] if cursor else [])
        response = client.get("/api/transactions", query_string=query)
        assert response.status_code == 200, (query, response.get_json())
        body = response.get_json()
        assert body["limit"] == (limit or 50)
        assert len(body["items"]) <= body["limit"]
        totals.append(body["total"])
        seen = {item["id"] for item in items}
        repeated = [item["id"] for item in body["items"] if item["id"] in seen]
        assert not repeated, f"rows {repeated} came back on a later page"  # fail fast, no endless walk
        items.extend(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            break
        # A next cursor promises at least one more row: a full page came back.
        assert len(body["items"]) == body["limit"]
    else:  # pragma: no cover - a cursor that never ends
        raise AssertionError("pagination did not end")
    assert all(t == totals[0] for t in totals), totals
    return items, totals[0]


def api_ids(client: Any, params: dict[str, Any] | list[tuple[str, str]], limit: int | None = None) -> list[int]:
    items, total = walk_api(client, params, limit)
    ids = [item["id"] for item in items]
    assert len(ids) == len(set(ids)), "a row was returned twice"
    if not total["capped"]:
        assert total["count"] == len(ids)
    return ids


class PageParser(HTMLParser):
    """What a user (or the load checker) reads from /transactions or an error page."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict[str, Any]] = []
        self.next_href: str | None = None
        self.total: int | None = None
        self.total_capped: str | None = None
        self.error_status: int | None = None
        self.error_field: str | None = None
        self._row: dict[str, Any] | None = None
        self._text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "tr" and "data-id" in a:
            self._row = {"id": int(a["data-id"] or 0), "version": int(a["data-version"] or 0), "label": None, "contact_id": None}
            self.rows.append(self._row)
        elif tag == "input" and self._row is not None and a.get("name") == "label":
            self._row["label"] = a.get("value") or None
        elif tag == "input" and self._row is not None and a.get("name") == "contact_id":
            self._row["contact_id"] = int(a["value"]) if a.get("value") else None
        elif tag == "a" and a.get("rel") == "next":
            self.next_href = a.get("href")
        elif tag == "p" and "data-total" in a:
            self.total = int(a["data-total"] or 0)
            self.total_capped = a.get("data-total-capped")
        elif tag == "div" and "data-status" in a:
            self.error_status = int(a["data-status"] or 0)
            self.error_field = a.get("data-field")

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._row = None

    def handle_data(self, data: str) -> None:
        self._text.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self._text).split())


def parse_page(html: bytes | str) -> PageParser:
    parser = PageParser()
    parser.feed(html.decode() if isinstance(html, bytes) else html)
    parser.close()
    return parser


def walk_html(client: Any, params: dict[str, Any] | list[tuple[str, str]]) -> tuple[list[dict[str, Any]], int | None]:
    """Every row of every page of /transactions, following the "Older transactions" link."""
    response = client.get("/transactions", query_string=params)
    rows: list[dict[str, Any]] = []
    total = None
    for _ in range(10_000):
        assert response.status_code == 200, response.data[:500]
        assert response.mimetype == "text/html"
        page = parse_page(response.data)
        total = page.total if total is None else total
        assert page.total == total
        rows.extend(page.rows)
        if page.next_href is None:
            break
        parts = urlsplit(page.next_href)
        assert parts.path == "/transactions" and not parts.netloc
        response = client.get(page.next_href)
    return rows, total


# ---- the database, read directly -----------------------------------------------------------

def snapshot(engine: Engine) -> list[tuple[Any, ...]]:
    """What an edit could change, for every row: compared before and after bad input."""
    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text("SELECT id, version, label, contact_id FROM transactions ORDER BY id"))]


def db_row(engine: Engine, tx_id: int) -> dict[str, Any]:
    with engine.connect() as connection:
        row = connection.execute(
            text("SELECT id, version, label, contact_id FROM transactions WHERE id = :id"), {"id": tx_id}
        ).mappings().one()
        return dict(row)
