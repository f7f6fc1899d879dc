"""The list: /api/transactions and /transactions against an independent oracle, on every backend.

Every filter and several combinations; keyset pagination (every row once, in order, also when
a page ends inside a group of equal timestamps); the capped count; exact amounts and
microsecond timestamps; the X-Served-By header; and the statement count of one page (no N+1).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import re
import threading
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, insert
from sqlalchemy.orm import Session

from lab import queries
from lab.models import Transaction
from tests.oracle import (
    REFERENCE,
    ROW_BY_ID,
    SEED_ROWS,
    WALLET_ADDRESS,
    api_ids,
    decode_cursor,
    expected_ids,
    newest_first,
    parse_page,
    parse_stamp,
    walk_api,
    walk_html,
)

UTC = dt.timezone.utc
W = WALLET_ADDRESS

# (query parameters, oracle filters). Values are picked from the seed so that every case
# matches some rows and excludes others (checked in test_filter_cases_are_discriminating).
FILTER_CASES: dict[str, list[tuple[list[tuple[str, str]], dict[str, Any]]]] = {
    "wallet": [
        ([("wallet", W[8])], {"wallet_ids": [8]}),
        ([("wallet", W[2]), ("wallet", W[7])], {"wallet_ids": [2, 7]}),
        ([("wallet", W[1]), ("wallet", W[3]), ("wallet", W[12])], {"wallet_ids": [1, 3, 12]}),
        ([("wallet", " " + W[5] + " ")], {"wallet_ids": [5]}),  # surrounding blanks ignored
        ([("wallet", W[4]), ("wallet", "0xnot-a-wallet-of-ours")], {"wallet_ids": [4]}),
    ],
    "type_asset": [
        ([("type", "in")], {"type": "in"}),
        ([("type", "out")], {"type": "out"}),
        ([("type", "swap")], {"type": "swap"}),
        ([("type", "fee")], {"type": "fee"}),
        ([("asset", "USDC")], {"asset": "USDC"}),
        ([("asset", "sol")], {"asset": "SOL"}),  # symbols are upper-cased
    ],
    "label": [
        ([("label", "salary")], {"label": "salary"}),
        ([("label", "Coffee")], {"label": "Coffee"}),
        ([("label", "Café")], {"label": "Café"}),
        ([("label", "100% bonus")], {"label": "100% bonus"}),
        ([("label", "fee_rebate")], {"label": "fee_rebate"}),
    ],
    "label_contains": [
        ([("label_contains", "BONUS")], {"label_contains": "bonus"}),
        ([("label_contains", "coffee")], {"label_contains": "coffee"}),
        ([("label_contains", "exchange")], {"label_contains": "exchange"}),
        ([("label_contains", "%")], {"label_contains": "%"}),
        ([("label_contains", "_")], {"label_contains": "_"}),
        ([("label_contains", "0% b")], {"label_contains": "0% b"}),
        ([("label_contains", "E_R")], {"label_contains": "e_r"}),
        ([("label_contains", "CAFÉ")], {"label_contains": "café"}),  # not only ASCII folds
        ([("label_contains", "NFT")], {"label_contains": "nft"}),
    ],
    "unlabelled_contact": [
        ([("unlabelled", "1")], {"unlabelled": True}),
        ([("unlabelled", "true")], {"unlabelled": True}),
        ([("contact", "34")], {"contact": 34}),
        ([("contact", "1")], {"contact": 1}),
    ],
    "combinations": [
        ([("wallet", W[8]), ("type", "fee")], {"wallet_ids": [8], "type": "fee"}),
        ([("type", "swap"), ("asset", "USDC"), ("unlabelled", "1")], {"type": "swap", "asset": "USDC", "unlabelled": True}),
        (
            [("wallet", W[8]), ("wallet", W[11]), ("label_contains", "E"), ("from", "2025-01-01"), ("to", "2025-10-01")],
            {"wallet_ids": [8, 11], "label_contains": "e",
             "date_from": dt.datetime(2025, 1, 1, tzinfo=UTC), "date_to": dt.datetime(2025, 10, 1, tzinfo=UTC)},
        ),
        ([("type", "in"), ("asset", "eth"), ("from", "2024-06-01T00:00:00Z")], {"type": "in", "asset": "ETH", "date_from": dt.datetime(2024, 6, 1, tzinfo=UTC)}),
        ([("contact", "34"), ("type", "in")], {"contact": 34, "type": "in"}),
        ([("label", "fee_rebate"), ("type", "fee")], {"label": "fee_rebate", "type": "fee"}),
    ],
}
# Filters that must match nothing: a wrong case in an exact label, wildcards taken literally.
EMPTY_CASES = [
    [("label", "Salary")],
    [("label", "coffee")],
    [("label", "fee")],  # exact, not a prefix
    [("label_contains", "%bonus")],  # '%' is a character, not "anything"
    [("label_contains", "fee_r_bate")],
    [("label_contains", "a_b")],
    [("wallet", "0xnot-a-wallet-of-ours")],
    [("contact", "40"), ("type", "fee")],  # fee legs never have a contact
]


def test_filter_cases_are_discriminating() -> None:
    """A case that matched everything or nothing could not tell a filter from no filter."""
    for group in FILTER_CASES.values():
        for _params, oracle in group:
            assert 0 < len(expected_ids(**oracle)) < len(SEED_ROWS), oracle
    # Sanity of the case-sensitivity cases: the seed's labels are spelled this way.
    labels = {r["label"] for r in SEED_ROWS}
    assert {"salary", "Coffee", "100% bonus", "fee_rebate", "Café"} <= labels
    assert "Salary" not in labels and "coffee" not in labels
    assert {r["label"] for r in SEED_ROWS if r["label"] and "%" in r["label"]} == {"100% bonus"}
    assert {r["label"] for r in SEED_ROWS if r["label"] and "_" in r["label"]} == {"fee_rebate"}


@pytest.mark.parametrize("group", sorted(FILTER_CASES))
def test_filters_match_the_oracle(client, group: str) -> None:  # type: ignore[no-untyped-def]
    for params, oracle in FILTER_CASES[group]:
        expected = expected_ids(**oracle)
        assert api_ids(client, params) == expected, params
        rows, total = walk_html(client, params + [("limit", "200")])
        assert [r["id"] for r in rows] == expected, params
        assert total == len(expected), params


def test_label_contains_reads_the_distinct_labels_then_rows_by_exact_label(client, engine, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """`label_contains` is resolved to `label IN (the distinct labels containing it)`: the same
    rows as LIKE on every row (the oracle above), and a text no label contains costs the
    walk over the distinct labels alone. With more distinct labels than the walk reads, the
    rows are filtered with LIKE instead, with the same result."""
    statements: list[str] = []

    def record(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
        if statement.strip().upper() != "BEGIN":
            statements.append(" ".join(statement.split()))

    distinct = sorted({r["label"] for r in SEED_ROWS if r["label"]})
    assert 3 < len(distinct) < queries.DISTINCT_LABELS_READ
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert api_ids(client, {"label_contains": "no label has this"}) == []
        assert len(statements) == 1 and "LIKE" in statements[0].upper()  # the walk, no row query
        statements.clear()
        ids = api_ids(client, {"label_contains": "exchange"}, limit=200)
        walk, page, count = statements[:3]
        assert "LIKE" in walk.upper() and "LIKE" not in page.upper() + count.upper()
        # Two labels contain it: the page and the count filter by both exact labels.
        assert "TRANSACTIONS.LABEL IN (" in page.upper() and "TRANSACTIONS.LABEL IN (" in count.upper()
        statements.clear()
        monkeypatch.setattr(queries, "DISTINCT_LABELS_READ", 3)
        assert api_ids(client, {"label_contains": "exchange"}, limit=200) == ids == expected_ids(label_contains="exchange")
        assert "LIKE" in statements[1].upper()  # too many distinct labels: the rows are filtered with LIKE
    finally:
        event.remove(engine, "before_cursor_execute", record)
    with Session(engine) as session:
        assert queries.labels_containing(session, "EXCHANGE") is None  # (the cap is 3 here)
        monkeypatch.setattr(queries, "DISTINCT_LABELS_READ", len(distinct))
        assert queries.labels_containing(session, "") == tuple(distinct)  # every label, once, in order


def test_filters_that_match_nothing(client) -> None:  # type: ignore[no-untyped-def]
    for params in EMPTY_CASES:
        body = client.get("/api/transactions", query_string=params).get_json()
        assert body["items"] == [] and body["total"] == {"count": 0, "capped": False}, params
        assert body["next_cursor"] is None
        page = parse_page(client.get("/transactions", query_string=params).data)
        assert page.rows == [] and page.total == 0, params
        assert "No transactions match these filters." in page.text


def test_date_range_bounds_are_exact_to_the_microsecond(client) -> None:  # type: ignore[no-untyped-def]
    # A group of legs sharing one timestamp T: `from` includes it, `to` excludes it.
    stamp = dt.datetime(2025, 9, 16, 18, 4, 39, 684880, tzinfo=UTC)
    group = newest_first(r for r in SEED_ROWS if r["occurred_at"] == stamp)
    assert len(group) == 3
    tick = dt.timedelta(microseconds=1)
    plus2 = dt.timezone(dt.timedelta(hours=2))
    minus530 = dt.timezone(-dt.timedelta(hours=5, minutes=30))
    cases = [
        ([("from", stamp.isoformat())], {"date_from": stamp}),
        ([("from", stamp.astimezone(plus2).isoformat())], {"date_from": stamp}),
        ([("to", stamp.isoformat().replace("+00:00", "Z"))], {"date_to": stamp}),
        ([("to", stamp.astimezone(minus530).isoformat())], {"date_to": stamp}),
        ([("from", (stamp + tick).isoformat())], {"date_from": stamp + tick}),
        # Exactly the group: [T, T + 1 µs).
        ([("from", stamp.astimezone(plus2).isoformat()), ("to", (stamp + tick).astimezone(minus530).isoformat())],
         {"date_from": stamp, "date_to": stamp + tick}),
        # No offset means UTC; a space may separate date and time.
        ([("from", stamp.replace(tzinfo=None).isoformat(sep=" ")), ("to", (stamp + tick).replace(tzinfo=None).isoformat())],
         {"date_from": stamp, "date_to": stamp + tick}),
        ([("from", "2025-03-01"), ("to", "2025-04-01")],
         {"date_from": dt.datetime(2025, 3, 1, tzinfo=UTC), "date_to": dt.datetime(2025, 4, 1, tzinfo=UTC)}),
    ]
    for params, oracle in cases:
        expected = expected_ids(**oracle)
        assert api_ids(client, params, limit=200) == expected, params
    assert expected_ids(date_from=stamp, date_to=stamp + tick) == group
    # One second on each side of the group changes nothing: the bounds are not rounded.
    assert api_ids(client, [("from", (stamp - tick).isoformat()), ("to", (stamp + tick).isoformat())]) == group
    rows, total = walk_html(client, [("from", stamp.astimezone(plus2).isoformat()), ("to", (stamp + tick).isoformat())])
    assert [r["id"] for r in rows] == group and total == 3
    # Hand-written URLs often leave "+" unencoded, which arrives as a space: still an offset.
    raw = f"/api/transactions?from={stamp.astimezone(plus2).isoformat()}&to={(stamp + tick).astimezone(plus2).isoformat()}"
    assert "+02:00" in raw
    assert [i["id"] for i in client.get(raw).get_json()["items"]] == group


def _page_boundaries_inside_groups(order: list[int], rows: dict[int, dict[str, Any]], limit: int) -> int:
    """How many page ends fall between two rows with the same timestamp."""
    return sum(
        1
        for end in range(limit, len(order), limit)
        if rows[order[end - 1]]["occurred_at"] == rows[order[end]]["occurred_at"]
    )


def test_keyset_pagination_walks_every_row_once_in_order(client, engine) -> None:  # type: ignore[no-untyped-def]
    # Ten more rows at one instant that already has three legs: a group of 13 equal
    # timestamps, so pages of 1, 2 and 7 must each end inside it at least once.
    stamp = dt.datetime(2025, 3, 9, 5, 10, 21, 915976, tzinfo=UTC)
    extra = [
        {"tx_hash": f"0xextra{n:02d}", "wallet_id": 1 + n % 12, "type": "in", "asset_symbol": "ETH",
         "amount": Decimal("1.5"), "occurred_at": stamp, "label": None, "contact_id": None, "version": 1}
        for n in range(10)
    ]
    with engine.begin() as connection:
        result = connection.execute(insert(Transaction).returning(Transaction.id), extra)
        new_ids = list(result.scalars())
    assert len(new_ids) == 10 and min(new_ids) > 300
    rows = dict(ROW_BY_ID)
    rows.update({i: {**row, "id": i} for i, row in zip(new_ids, extra)})
    order = newest_first(rows.values())
    assert sum(1 for r in rows.values() if r["occurred_at"] == stamp) == 13

    for limit in (1, 2, 7, 50):
        assert _page_boundaries_inside_groups(order, rows, limit) > 0, limit
        items, total = walk_api(client, {}, limit=limit)
        assert [item["id"] for item in items] == order, limit
        assert total == {"count": 310, "capped": False}
    html_rows, html_total = walk_html(client, {"limit": "7", "from": "2025-03-01", "to": "2025-04-01"})
    assert [r["id"] for r in html_rows] == [i for i in order if dt.datetime(2025, 3, 1, tzinfo=UTC) <= rows[i]["occurred_at"] < dt.datetime(2025, 4, 1, tzinfo=UTC)]
    assert html_total == len(html_rows) > 14


def test_cursor_is_opaque_and_tampering_is_refused(client) -> None:  # type: ignore[no-untyped-def]
    first = client.get("/api/transactions", query_string={"limit": 2}).get_json()
    token = first["next_cursor"]
    assert re.fullmatch(r"[A-Za-z0-9_-]+", token), token  # URL-safe base64, no padding
    assert "2025" not in token and ":" not in token  # not a readable timestamp
    stamp, last_id = decode_cursor(token)
    assert last_id == first["items"][-1]["id"] and parse_stamp(stamp) == parse_stamp(first["items"][-1]["occurred_at"])
    second = client.get("/api/transactions", query_string={"limit": 2, "cursor": token}).get_json()
    assert [i["id"] for i in second["items"]] == newest_first(SEED_ROWS)[2:4]

    # The cursor is not signed: a well-formed one naming another (timestamp, id) is just
    # another position, harmless. Everything that is not a cursor this API could have made
    # is refused: cut short, shifted, not base64, not JSON, the wrong JSON shape or types.
    def b64(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")

    tampered = [
        token[:-3], token[1:], token + "x!", "!!!", "bm90IGpzb24", "e30", b64(None), b64([stamp]),
        b64([stamp, last_id, 1]), b64([stamp, str(last_id)]), b64([stamp, True]), b64([stamp, 1.5]),
        b64([stamp.replace("+00:00", ""), last_id]),  # a naive timestamp
        b64(["yesterday", last_id]), b64([12345, last_id]), b64({"occurred_at": stamp, "id": last_id}),
    ]
    for bad in tampered:
        for path in ("/api/transactions", "/transactions"):
            response = client.get(path, query_string={"cursor": bad, "limit": 2})
            assert response.status_code == 400, (bad, path)
            if path.startswith("/api/"):
                assert response.get_json()["field"] == "cursor"
            else:
                page = parse_page(response.data)
                assert (page.error_status, page.error_field) == (400, "cursor") and "cursor" in page.text


def test_page_size_default_and_bounds(client) -> None:  # type: ignore[no-untyped-def]
    order = newest_first(SEED_ROWS)
    body = client.get("/api/transactions").get_json()
    assert body["limit"] == queries.DEFAULT_PAGE_SIZE == 50
    assert [i["id"] for i in body["items"]] == order[:50] and body["next_cursor"]
    body = client.get("/api/transactions", query_string={"limit": 200}).get_json()
    assert [i["id"] for i in body["items"]] == order[:200]
    assert queries.MAX_PAGE_SIZE == 200
    assert len(parse_page(client.get("/transactions").data).rows) == 50
    assert len(parse_page(client.get("/transactions?limit=200").data).rows) == 200
    for bad in ("201", "0", "-1", "ten", "1.5", "1e2"):
        response = client.get("/api/transactions", query_string={"limit": bad})
        assert response.status_code == 400 and response.get_json()["field"] == "limit", bad
        page = parse_page(client.get("/transactions", query_string={"limit": bad}).data)
        assert (page.error_status, page.error_field) == (400, "limit"), bad


def test_total_is_capped(client, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/api/transactions").get_json()["total"] == {"count": 300, "capped": False}
    monkeypatch.setattr(queries, "COUNT_CAP", 5)
    cases = [
        ({}, {"count": 5, "capped": True}),
        ({"label": "100% bonus"}, {"count": 5, "capped": True}),  # 6 rows
        ({"label": "loan repayment"}, {"count": 5, "capped": False}),  # exactly 5
        ({"label": "airdrop"}, {"count": 2, "capped": False}),
    ]
    for params, total in cases:
        assert len(expected_ids(**params)) == {"": 300, "100% bonus": 6, "loan repayment": 5, "airdrop": 2}[params.get("label", "")]
        assert client.get("/api/transactions", query_string=params).get_json()["total"] == total, params
    # The cap limits the count, never the rows: a capped walk still returns all 6.
    assert len(api_ids(client, {"label": "100% bonus"}, limit=2)) == 6
    page = parse_page(client.get("/transactions").data)
    assert (page.total, page.total_capped) == (5, "true")
    assert "5+ matching transactions" in page.text
    page = parse_page(client.get("/transactions?label=airdrop").data)
    assert (page.total, page.total_capped) == (2, "false") and "2 matching transactions" in page.text


def test_every_field_round_trips_exactly(client, engine) -> None:  # type: ignore[no-untyped-def]
    """Microseconds (MariaDB DATETIME(6)) and 18-decimal amounts (text on SQLite) survive."""
    extremes = [
        ("0xbig", Decimal("12345678901234567890.123456789012345678"), dt.datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC)),
        ("0xtiny", Decimal("0.000000000000000001"), dt.datetime(2024, 3, 1, 0, 0, 0, 1, tzinfo=UTC)),
    ]
    with engine.begin() as connection:
        for tx_hash, amount, stamp in extremes:
            connection.execute(insert(Transaction).values(
                tx_hash=tx_hash, wallet_id=1, type="in", asset_symbol="ETH", amount=amount, occurred_at=stamp, version=1))
    items, _ = walk_api(client, {}, limit=200)
    assert len(items) == 302
    contacts = {c["id"]: c["name"] for c in REFERENCE.contacts}
    wallets = {w["id"]: w for w in REFERENCE.wallets}
    by_hash = {i["tx_hash"]: i for i in items}
    for tx_hash, amount, stamp in extremes:
        assert by_hash[tx_hash]["amount"] == str(amount)
        assert parse_stamp(by_hash[tx_hash]["occurred_at"]) == stamp
    for item in items:
        if item["tx_hash"] in ("0xbig", "0xtiny"):
            continue
        row = ROW_BY_ID[item["id"]]
        assert item["amount"] == str(row["amount"]), item["id"]
        assert Decimal(item["amount"]) == row["amount"] and len(item["amount"].split(".")[1]) == 18
        assert parse_stamp(item["occurred_at"]) == row["occurred_at"], item["id"]
        assert item["occurred_at"].endswith("Z")
        assert (item["tx_hash"], item["type"], item["asset"], item["label"], item["version"]) == (
            row["tx_hash"], row["type"], row["asset_symbol"], row["label"], 1)
        wallet = wallets[row["wallet_id"]]
        assert item["wallet"] == {"address": wallet["address"], "chain": wallet["chain"], "name": wallet["name"]}
        expected_contact = {"id": row["contact_id"], "name": contacts[row["contact_id"]]} if row["contact_id"] else None
        assert item["contact"] == expected_contact, item["id"]
    # Not trivially true: the seed really has sub-second parts and 18 significant decimals.
    assert sum(1 for r in SEED_ROWS if r["occurred_at"].microsecond % 1000) > 250
    assert sum(1 for r in SEED_ROWS if r["amount"] != round(r["amount"], 15)) > 250


def test_every_response_says_which_process_and_thread_served_it(client) -> None:  # type: ignore[no-untyped-def]
    expected = f"{os.getpid()}/{threading.get_native_id()}"  # the test client serves in this thread
    first = client.get("/api/transactions?limit=1").get_json()["items"][0]
    responses = [
        client.get("/api/transactions"),
        client.get("/transactions"),
        client.get("/api/transactions?limit=0"),  # 400 JSON
        client.get("/transactions?type=bogus"),  # 400 HTML
        client.post("/api/transactions/999999/label", json={"label": "x", "version": 1}),  # 404
        client.post(f"/api/transactions/{first['id']}/label", json={"label": "x", "version": first["version"]}),  # 200
        client.post(f"/api/transactions/{first['id']}/label", json={"label": "y", "version": first["version"]}),  # 409
        client.post(f"/transactions/{first['id']}/label", data={"label": "z", "version": "2"}),  # 303
        client.get("/api/transactions/1/label"),  # 405
        client.get("/nowhere"),  # 404 from the router
    ]
    assert [r.status_code for r in responses] == [200, 200, 400, 400, 404, 200, 409, 303, 405, 404]
    for response in responses:
        assert response.headers.get("X-Served-By") == expected, response.status_code


def test_one_page_costs_the_same_statements_whatever_its_size(client, engine) -> None:  # type: ignore[no-untyped-def]
    """No N+1: a page is 2 statements (the rows with their wallet and contact, the capped count).

    On SQLite the pysqlite recipe sends its own `BEGIN` through exec_driver_sql, so it passes
    this hook; PostgreSQL and MariaDB begin inside the driver, unseen. BEGIN is not a query
    of the page, so it is left out on every backend to compare like with like (it would be
    one per request either way, never one per row).
    """
    statements: list[str] = []
    parameters: list[Any] = []

    def count(_conn, _cursor, statement, params, _context, _executemany) -> None:  # type: ignore[no-untyped-def]
        if statement.strip().upper() != "BEGIN":
            statements.append(statement)
            parameters.append(params)

    event.listen(engine, "before_cursor_execute", count)
    try:
        per_size = {}
        for limit in (10, 200):
            statements.clear()
            parameters.clear()
            body = client.get("/api/transactions", query_string={"limit": limit}).get_json()
            assert len(body["items"]) == limit
            # Wallet and contact of every row are there without a query per row.
            assert sum(1 for i in body["items"] if i["contact"]) > 0 and all(i["wallet"]["name"] for i in body["items"])
            per_size[limit] = list(statements)
            # The count stops in the database at COUNT_CAP + 1 rows instead of scanning all.
            assert "LIMIT" in statements[-1].upper() and "count(" in statements[-1].lower()
            values = parameters[-1].values() if isinstance(parameters[-1], dict) else parameters[-1]
            assert queries.COUNT_CAP + 1 in values, parameters[-1]
        html_counts = []
        for limit in (10, 200):
            statements.clear()
            assert len(parse_page(client.get("/transactions", query_string={"limit": limit}).data).rows) == limit
            html_counts.append(len(statements))
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(per_size[10]) == len(per_size[200]) == 2, per_size
    assert all(s.lstrip().upper().startswith("SELECT") for s in per_size[200])
    assert html_counts == [3, 3]  # the page, the count and the contacts of the edit form
