"""Bad input gets a clear 4xx that names the field, and changes nothing, on every backend.

The API answers JSON `{"error": ..., "field": ...}`; the HTML routes a readable page with the
status and the field. "Changes nothing" is checked on the table itself: (id, version, label,
contact_id) of every row before and after. Input reaches SQL only as bound parameters.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from sqlalchemy import text

from tests.oracle import SEED_ROWS, api_ids, db_row, expected_ids, parse_page, snapshot

STAMP = "2025-03-09T05:10:21.915976+00:00"


def _b64(value: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


# (query parameters, the field the answer must name)
BAD_QUERIES: list[tuple[dict[str, str], str]] = [
    ({"from": "yesterday"}, "from"),
    ({"from": "2025-13-01"}, "from"),
    ({"to": "2025-01-01T25:00"}, "to"),
    ({"from": "2025-02-01", "to": "2025-01-01"}, "to"),
    ({"from": "2025-01-01T00:00:00Z", "to": "2025-01-01T02:00:00+02:00"}, "to"),  # the same instant
    ({"from": "0001-01-01T00:00:00+01:00"}, "from"),  # before year 1 in UTC
    ({"to": "9999-12-31T23:59:59-01:00"}, "to"),  # after year 9999 in UTC
    ({"cursor": "!!!"}, "cursor"),
    ({"cursor": "e30"}, "cursor"),  # {} in base64
    ({"cursor": _b64([STAMP, 10**20])}, "cursor"),  # an id no row can have
    ({"cursor": _b64(["0001-01-01T00:00:00+01:00", 5])}, "cursor"),
    ({"type": "deposit"}, "type"),
    ({"type": "IN"}, "type"),
    ({"label": "x" * 201}, "label"),
    ({"label_contains": "x" * 201}, "label_contains"),
    ({"limit": "201"}, "limit"),
    ({"limit": "0"}, "limit"),
    ({"limit": "-5"}, "limit"),
    ({"limit": "ten"}, "limit"),
    ({"limit": "²"}, "limit"),  # a Unicode digit that int() refuses
    ({"limit": "9" * 5000}, "limit"),  # longer than int() converts
    ({"contact": "abc"}, "contact"),
    ({"contact": "0"}, "contact"),
    ({"contact": "99999999999999999999"}, "contact"),  # beyond any INTEGER id
    ({"unlabelled": "maybe"}, "unlabelled"),
    ({"unlabelled": "1", "label": "rent"}, "unlabelled"),
    ({"unlabelled": "1", "label_contains": "r"}, "unlabelled"),
    ({"page": "2"}, "page"),  # unknown parameter
    ({"offset": "50", "limit": "10"}, "offset"),
    ({"label_contains": "a\x00b"}, "label_contains"),  # PostgreSQL text cannot hold NUL
    ({"wallet": "\x00"}, "wallet"),
]


def _check_json_error(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, (field, response.status_code, response.data[:300])
    body = response.get_json()
    assert body["field"] == field, body
    assert isinstance(body["error"], str) and len(body["error"]) > 5


def _check_html_error(response: Any, status: int, field: str) -> None:
    assert response.status_code == status, (field, response.status_code, response.data[:300])
    assert response.mimetype == "text/html"
    page = parse_page(response.data)
    assert (page.error_status, page.error_field) == (status, field)
    assert str(status) in page.text and field in page.text
    assert "Back to the transactions" in page.text


def test_bad_filters_get_400_naming_the_field(client, engine) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(engine)
    for params, field in BAD_QUERIES:
        _check_json_error(client.get("/api/transactions", query_string=params), 400, field)
        _check_html_error(client.get("/transactions", query_string=params), 400, field)
    assert snapshot(engine) == before


def _row() -> dict[str, Any]:
    return next(r for r in SEED_ROWS if r["label"] == "rent")


def test_bad_api_edits_get_4xx_and_change_nothing(client, engine) -> None:  # type: ignore[no-untyped-def]
    tx_id = _row()["id"]
    label, contact = f"/api/transactions/{tx_id}/label", f"/api/transactions/{tx_id}/contact"
    # (path, request keyword arguments, status, field)
    cases: list[tuple[str, dict[str, Any], int, str]] = [
        ("/api/transactions/999999/label", {"json": {"label": "x", "version": 1}}, 404, "id"),
        ("/api/transactions/0/label", {"json": {"label": "x", "version": 1}}, 404, "id"),
        ("/api/transactions/99999999999999999999/label", {"json": {"label": "x", "version": 1}}, 404, "id"),
        ("/api/transactions/999999/contact", {"json": {"contact_id": 1, "version": 1}}, 404, "id"),
        (label, {"data": {"label": "x", "version": "1"}}, 400, "body"),  # a form, not JSON
        (label, {"data": '{"label": "x", "version": 1}', "content_type": "text/plain"}, 400, "body"),
        (label, {"data": '{"label": "x", "version": 1', "content_type": "application/json"}, 400, "body"),
        (label, {"json": [{"label": "x", "version": 1}]}, 400, "body"),
        (label, {"json": "x"}, 400, "body"),
        (label, {"json": {"label": "x"}}, 400, "version"),
        (label, {"json": {"label": "x", "version": None}}, 400, "version"),
        (label, {"json": {"label": "x", "version": True}}, 400, "version"),
        (label, {"json": {"label": "x", "version": "1"}}, 400, "version"),  # JSON has numbers
        (label, {"json": {"label": "x", "version": -1}}, 400, "version"),
        (label, {"json": {"label": "x", "version": 0}}, 400, "version"),
        (label, {"json": {"label": "x", "version": 1.0}}, 400, "version"),
        (label, {"json": {"label": "x", "version": 10**20}}, 400, "version"),
        (label, {"json": {"label": "x" * 201, "version": 1}}, 400, "label"),
        (label, {"json": {"label": 5, "version": 1}}, 400, "label"),
        (label, {"json": {"label": ["x"], "version": 1}}, 400, "label"),
        (label, {"json": {"label": "a\x00b", "version": 1}}, 400, "label"),
        (label, {"data": '{"label": "\\ud800", "version": 1}', "content_type": "application/json"}, 400, "label"),
        (contact, {"json": {"contact_id": 999, "version": 1}}, 400, "contact_id"),  # no such contact
        (contact, {"json": {"contact_id": 2**31, "version": 1}}, 400, "contact_id"),
        (contact, {"json": {"contact_id": 10**20, "version": 1}}, 400, "contact_id"),
        (contact, {"json": {"contact_id": "abc", "version": 1}}, 400, "contact_id"),
        (contact, {"json": {"contact_id": "5", "version": 1}}, 400, "contact_id"),
        (contact, {"json": {"contact_id": 0, "version": 1}}, 400, "contact_id"),
        (contact, {"json": {"contact_id": True, "version": 1}}, 400, "contact_id"),
        (contact, {"json": {"contact_id": 1.5, "version": 1}}, 400, "contact_id"),
        (contact, {"json": {"contact_id": 3}}, 400, "version"),
    ]
    before = snapshot(engine)
    for path, kwargs, status, field in cases:
        _check_json_error(client.post(path, **kwargs), status, field)
        assert snapshot(engine) == before, (path, kwargs)
    # The row is still editable from version 1: nothing above touched it.
    assert client.post(label, json={"label": "ok", "version": 1}).status_code == 200


def test_bad_form_edits_get_an_error_page_and_change_nothing(client, engine) -> None:  # type: ignore[no-untyped-def]
    tx_id = _row()["id"]
    label, contact = f"/transactions/{tx_id}/label", f"/transactions/{tx_id}/contact"
    cases: list[tuple[str, dict[str, str], int, str]] = [
        ("/transactions/999999/label", {"label": "x", "version": "1"}, 404, "id"),
        ("/transactions/999999/contact", {"contact_id": "1", "version": "1"}, 404, "id"),
        (label, {"label": "x"}, 400, "version"),
        (label, {"label": "x", "version": ""}, 400, "version"),
        (label, {"label": "x", "version": "abc"}, 400, "version"),
        (label, {"label": "x", "version": "-1"}, 400, "version"),
        (label, {"label": "x", "version": "²"}, 400, "version"),
        (label, {"label": "x", "version": "9" * 5000}, 400, "version"),
        (label, {"label": "x" * 201, "version": "1"}, 400, "label"),
        (label, {"label": "a\x00b", "version": "1"}, 400, "label"),
        (contact, {"contact_id": "999", "version": "1"}, 400, "contact_id"),
        (contact, {"contact_id": "abc", "version": "1"}, 400, "contact_id"),
        (contact, {"contact_id": "99999999999999999999", "version": "1"}, 400, "contact_id"),
    ]
    before = snapshot(engine)
    for path, data, status, field in cases:
        _check_html_error(client.post(path, data={**data, "return_to": "type=in"}), status, field)
        assert snapshot(engine) == before, (path, data)
    assert client.post(label, data={"label": "ok", "version": "1"}).status_code == 303


def test_a_broken_return_to_does_not_break_a_good_edit(client, engine) -> None:  # type: ignore[no-untyped-def]
    """return_to is only where to go next: a value no Location header can carry is dropped,
    and the (valid) edit is acknowledged rather than committed behind an error page."""
    tx_id = _row()["id"]
    response = client.post(f"/transactions/{tx_id}/label", data={"label": "ok", "version": "1", "return_to": "type=in\r\nSet-Cookie: x=1"})
    assert (response.status_code, response.headers["Location"]) == (303, "/transactions")
    assert "Set-Cookie" not in response.headers
    assert db_row(engine, tx_id)["label"] == "ok"


def test_input_reaches_sql_only_as_bound_parameters(client, engine) -> None:  # type: ignore[no-untyped-def]
    hostile = [
        "'; DROP TABLE transactions; --",
        "' OR '1'='1",
        '" OR "1"="1',
        "\\",
        "') OR 1=1 --",
        "*/ OR 1=1; /*",
    ]
    for value in hostile:
        for name in ("label", "label_contains", "wallet", "asset"):
            response = client.get("/api/transactions", query_string={name: value})
            assert response.status_code == 200, (name, value)
            assert response.get_json()["items"] == [] and response.get_json()["total"]["count"] == 0, (name, value)
    # Stored as plain text and found again by exactly these characters.
    tx_id = _row()["id"]
    nasty = "O'Brien \"quoted\" back\\slash 50%_off; DROP TABLE transactions; --"
    body = client.post(f"/api/transactions/{tx_id}/label", json={"label": nasty, "version": 1}).get_json()
    assert body["label"] == nasty
    assert db_row(engine, tx_id)["label"] == nasty
    for params in ({"label": nasty}, {"label_contains": "'"}, {"label_contains": "\\"}, {"label_contains": '"quoted"'},
                   {"label_contains": "%_"}, {"label_contains": "O'BRIEN"}):
        assert api_ids(client, params) == [tx_id], params
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM transactions")).scalar_one() == 300
    assert api_ids(client, {"label": "rent"}) == [i for i in expected_ids(label="rent") if i != tx_id]


def test_a_field_given_twice_is_refused_naming_it(client, engine) -> None:  # type: ignore[no-untyped-def]
    """`?type=in&type=out`, a form with two versions, a JSON object with a key twice: ambiguous,
    so refused with the field named, instead of silently taking one of the values. Only
    `wallet` repeats (several wallets)."""
    before = snapshot(engine)
    for query, field in (("type=in&type=out", "type"), ("limit=5&limit=500", "limit"), ("cursor=a&cursor=b", "cursor")):
        _check_json_error(client.get(f"/api/transactions?{query}"), 400, field)
        _check_html_error(client.get(f"/transactions?{query}"), 400, field)
    assert client.get("/api/transactions?wallet=a&wallet=b").status_code == 200
    row = _row()
    form = f"version={row['version']}&version={row['version'] + 1}&label=twice"
    _check_html_error(client.post(f"/transactions/{row['id']}/label", data=form,
                                  headers={"Content-Type": "application/x-www-form-urlencoded"}), 400, "version")
    body = f'{{"label": "first", "label": "second", "version": {row["version"]}}}'
    _check_json_error(client.post(f"/api/transactions/{row['id']}/label", data=body,
                                  headers={"Content-Type": "application/json"}), 400, "label")
    assert snapshot(engine) == before
