"""The benchmark's floor encodes the very body the app answers, on every backend: the same
statements on a plain DBAPI connection, the JSON built from the driver's rows (bench/floor.py).
A floor that answered something else would make the "within 2x of the floor" target meaningless."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bench import floor as floor_json
from bench import measure
from tests.oracle import REFERENCE, WALLET_ADDRESS

CONTACTS_BY_NAME = [{"id": c["id"], "name": c["name"]} for c in sorted(REFERENCE.contacts, key=lambda c: c["name"])]

QUERIES = [
    {},
    {"limit": "7", "wallet": WALLET_ADDRESS[8]},
    {"label_contains": "exchange", "limit": "3"},  # the distinct labels, then the page by exact labels
    {"label_contains": "no label has this"},  # the distinct labels alone: an empty page
    {"contact": "7", "limit": "200"},
    {"type": "in", "limit": "1"},
]


@pytest.mark.parametrize("query", QUERIES, ids=lambda q: "&".join(f"{k}={v}" for k, v in q.items()) or "no filter")
def test_the_floor_answers_the_app_s_body_byte_for_byte(client, engine, query: dict[str, Any]) -> None:  # type: ignore[no-untyped-def]
    floor = measure.Floor(engine)
    try:
        for page in (1, 2):
            response = client.get(measure.KEYSET_PATH, query_string=query)
            assert response.status_code == 200
            statements = measure.capture(engine, lambda: client.get(measure.KEYSET_PATH, query_string=query))
            limit = int(query.get("limit", 50))
            _total, timings, body = floor.run(statements, lambda rows: floor_json.json_page(rows, limit))
            assert body == response.data, (body[:300], response.data[:300])
            assert len(timings) == len(statements)
            html_statements = measure.capture(engine, lambda: client.get(measure.HTML_PATH, query_string=query))
            html_data = json.loads(floor.run(html_statements, lambda rows: floor_json.html_page_data(rows, limit))[2])
            assert html_data["page"] == json.loads(response.data)
            assert html_data["contacts"] == CONTACTS_BY_NAME
            cursor = json.loads(response.data)["next_cursor"]
            if not cursor:
                break
            query = {**query, "cursor": cursor}
    finally:
        floor.close()
