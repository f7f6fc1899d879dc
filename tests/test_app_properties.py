"""Property-based tests (hypothesis) of what the fixed app does with any input, on each backend.

Query strings of both list pages, JSON bodies of both API edits and of a new contact, and the
page's form posts are drawn from unicode, very long, negative, huge, malformed, SQL-looking,
wrongly typed and duplicated values. Whatever arrives:
- never a 5xx;
- a refusal is a documented 4xx (400 bad input, 404 no such row, 409 stale version) that names
  the field it refuses: JSON `{"error", "field"}` on the API, the field on the HTML error page;
- a refused edit changes nothing: every row's (id, version, label, contact_id) is read back
  from the database and compared;
- an accepted edit changes exactly its row, to the next version.
Examples are derandomized (the same ones on every run: a failure reproduces), without a
deadline (a shared 2-core machine), and the test client gives each example a fresh request.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import re
from typing import Any
from urllib.parse import urlencode

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from lab import web
from lab.models import TRANSACTION_TYPES
from tests.oracle import snapshot

EXAMPLES = 60
PROPERTY = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

SQL_LOOKING = ["' OR 1=1 --", "1; DROP TABLE transactions", "\" UNION SELECT * FROM wallets --", "%", "_", "\\",
               "/", "%_%", "NULL", "null", "0x00", "1e309", "NaN", "-0", "00000000001", "９"]
# Text a user, a browser or an attacker may send: any unicode a URL or form can carry (no
# surrogates: they cannot be UTF-8 encoded), very long, numbers of every size, SQL-looking.
text_value = st.one_of(
    st.text(st.characters(codec="utf-8"), max_size=40),
    st.text(st.characters(codec="utf-8"), min_size=195, max_size=400),
    st.integers(min_value=-10**40, max_value=10**40).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(SQL_LOOKING),
    st.just(""),
)
known_field = st.sampled_from([*web.FILTER_FIELDS, "cursor"])
field_name = st.one_of(known_field, known_field, st.text(st.characters(codec="utf-8"), min_size=1, max_size=12))
# Pairs a well-behaved client sends, so that accepted requests are drawn too.
dates = st.dates(min_value=dt.date(2023, 1, 1), max_value=dt.date(2026, 12, 31)).map(str)
plausible_pair = st.one_of(
    st.tuples(st.just("type"), st.sampled_from(TRANSACTION_TYPES)),
    st.tuples(st.just("limit"), st.integers(min_value=1, max_value=200).map(str)),
    st.tuples(st.sampled_from(["label", "label_contains"]), st.text(st.characters(codec="utf-8"), max_size=12)),
    st.tuples(st.just("asset"), st.sampled_from(["ETH", "btc", "USDC", "DAI"])),
    st.tuples(st.sampled_from(["from", "to"]), dates),
    st.tuples(st.just("unlabelled"), st.sampled_from(["1", "0", "true", ""])),
    st.tuples(st.just("contact"), st.integers(min_value=1, max_value=45).map(str)),
)
# A query string as pairs: keys repeat (duplicated values), unknown keys appear.
query_pairs = st.lists(st.one_of(st.tuples(field_name, text_value), plausible_pair), max_size=6)

json_scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                        st.floats(allow_nan=False), st.text(max_size=30), text_value)
json_value = st.recursive(json_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
                          max_leaves=6)
version_value = st.one_of(st.sampled_from([1, 2, 3]), json_value)


def _label_body(field: str) -> st.SearchStrategy[bytes]:
    """A JSON edit body: the documented shape with any values, any object, any JSON value,
    a key given twice, or bytes that are no JSON at all. Surrogates arrive as \\u escapes."""
    documented = st.fixed_dictionaries({field: json_value, "version": version_value},
                                       optional={"extra": json_value}).map(json.dumps)
    duplicated = st.tuples(json_value, version_value).map(
        lambda pair: f'{{"{field}": {json.dumps(pair[0])}, "{field}": null, "version": {json.dumps(pair[1])}}}')
    plausible = st.fixed_dictionaries({
        field: st.one_of(st.none(), st.text(st.characters(codec="utf-8"), max_size=30), st.integers(min_value=1, max_value=45)),
        "version": st.sampled_from([1, 2, 3])}).map(json.dumps)
    text = st.one_of(plausible, plausible, plausible, documented, duplicated, json_value.map(json.dumps),
                     st.dictionaries(st.text(max_size=10), json_value, max_size=4).map(json.dumps))
    return st.one_of(text.map(str.encode), text.map(str.encode),
                     st.binary(max_size=60), st.sampled_from([b"", b"{", b'{"label": "x",}', b"\xff\xfe{}"]))


tx_id = st.one_of(st.integers(min_value=1, max_value=300), st.integers(min_value=0, max_value=2**80))


def _refusal_field(status: int, body: dict[str, Any]) -> str | None:
    assert status in (400, 404, 409), status
    assert isinstance(body["error"], str) and body["error"], body
    return body["field"]


def _page_field(page: str) -> str | None:
    """The field an HTML error page names (its `data-field`)."""
    found = re.search(r'data-field="([^"]*)"', page)
    return html.unescape(found.group(1)) if found else None


def _check_accepted_edit(before: list[tuple[Any, ...]], after: list[tuple[Any, ...]], edited: int) -> None:
    changed = [(old, new) for old, new in zip(before, after) if old != new]
    assert len(before) == len(after) and len(changed) == 1, changed
    (old, new), = changed
    assert new[0] == edited and new[1] == old[1] + 1, (old, new)


@pytest.mark.parametrize("path", ["/api/transactions", "/transactions"])
@PROPERTY
@given(pairs=query_pairs)
def test_any_query_string_of_the_lists(client: FlaskClient, path: str, pairs: list[tuple[str, str]]) -> None:
    response = client.get(f"{path}?{urlencode(pairs)}")
    event(f"status {response.status_code}")
    assert response.status_code < 500, (pairs, response.get_data(as_text=True)[:300])
    sent = {name for name, _value in pairs}
    if response.status_code == 200:
        if path.startswith("/api/"):
            page = response.get_json()
            limit = int(dict(pairs).get("limit") or 50)
            assert len(page["items"]) <= page["limit"] == limit
        return
    assert response.status_code == 400, pairs
    if path.startswith("/api/"):
        field = _refusal_field(400, response.get_json())
        assert field in sent, (pairs, response.get_json())
    else:
        assert _page_field(response.get_data(as_text=True)) in sent, pairs


@pytest.mark.parametrize("field", ["label", "contact_id"])
@PROPERTY
@given(data=st.data(), row=tx_id)
def test_any_api_edit_body(client: FlaskClient, engine: Engine, field: str, data: st.DataObject, row: int) -> None:
    body = data.draw(_label_body(field))
    content_type = data.draw(st.sampled_from(["application/json"] * 4 + ["text/plain", ""]))
    before = snapshot(engine)
    route = "label" if field == "label" else "contact"
    response = client.post(f"/api/transactions/{row}/{route}", data=body,
                           headers={"Content-Type": content_type} if content_type else {})
    event(f"status {response.status_code}")
    assert response.status_code < 500, (body, response.get_data(as_text=True)[:300])
    after = snapshot(engine)
    if response.status_code == 200:
        assert content_type == "application/json"
        _check_accepted_edit(before, after, row)
        return
    refused = _refusal_field(response.status_code, response.get_json())
    event(f"refused: {refused}")
    assert refused in {"body", field, "version", "id"}, (body, response.get_json())
    assert after == before, (body, response.get_json())


@pytest.mark.parametrize("field", ["label", "contact_id"])
@PROPERTY
@given(data=st.data(), row=tx_id)
def test_any_form_post(client: FlaskClient, engine: Engine, field: str, data: st.DataObject, row: int) -> None:
    plausible = st.tuples(st.tuples(st.just("version"), st.sampled_from(["1", "2", " 3 ", "01"])),
                          st.tuples(st.just(field), st.one_of(st.integers(min_value=1, max_value=45).map(str), text_value)))
    extra = st.lists(st.tuples(st.sampled_from(["version", "label", "contact_id", "return_to"]) | field_name,
                               text_value), max_size=4)
    pairs = data.draw(st.one_of(extra, st.tuples(plausible.map(list), extra).map(lambda both: both[0] + both[1]),
                                plausible.map(list)))
    before = snapshot(engine)
    route = "label" if field == "label" else "contact"
    response = client.post(f"/transactions/{row}/{route}", data=urlencode(pairs),
                           headers={"Content-Type": "application/x-www-form-urlencoded"})
    event(f"status {response.status_code}")
    assert response.status_code < 500, (pairs, response.get_data(as_text=True)[:300])
    after = snapshot(engine)
    if response.status_code == 303:
        _check_accepted_edit(before, after, row)
        return
    assert response.status_code in (400, 404, 409), (pairs, response.status_code)
    named = {name for name, _value in pairs} | {field, "version", "id"}
    assert _page_field(response.get_data(as_text=True)) in named, pairs
    assert after == before, pairs


def _contact_rows(engine: Engine) -> list[tuple[Any, ...]]:
    from sqlalchemy import text

    with engine.connect() as connection:
        return [tuple(r) for r in connection.execute(text("SELECT id, name, address FROM contacts ORDER BY id"))]


@PROPERTY
@given(data=st.data())
def test_any_new_contact_body(client: FlaskClient, engine: Engine, data: st.DataObject) -> None:
    """POST /api/contacts: a 201 adds exactly one contact (its name and address trimmed); a
    refusal (400, or 409 for a taken name) names the field and adds nothing."""
    name = st.one_of(st.none(), st.text(st.characters(codec="utf-8"), max_size=30), text_value, json_value)
    documented = st.fixed_dictionaries({"name": name}, optional={"address": name, "extra": json_value}).map(json.dumps)
    body = data.draw(st.one_of(documented.map(str.encode), documented.map(str.encode),
                               json_value.map(json.dumps).map(str.encode), st.binary(max_size=40),
                               st.sampled_from([b"", b"{", b'{"name": "a", "name": "b"}'])))
    content_type = data.draw(st.sampled_from(["application/json"] * 4 + ["text/plain"]))
    before = _contact_rows(engine)
    response = client.post("/api/contacts", data=body, headers={"Content-Type": content_type})
    event(f"status {response.status_code}")
    assert response.status_code < 500, (body, response.get_data(as_text=True)[:300])
    after = _contact_rows(engine)
    if response.status_code == 201:
        sent = json.loads(body)
        added = response.get_json()
        assert after == before + [(added["id"], sent["name"].strip(), (sent.get("address") or "").strip() or None)]
        return
    refused = _refusal_field(response.status_code, response.get_json())
    event(f"refused: {refused}")
    assert refused in {"body", "name", "address"}, (body, response.get_json())
    assert after == before, (body, response.get_json())
