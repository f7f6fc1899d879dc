"""Adding a contact, from the API and from the page's form, on every backend.

A new contact is committed with its creation time (UTC, microseconds, set by the column's
default when the row is inserted) and is among the page's contact choices at the next read;
bad input gets a 400 (a taken name 409) naming the field, and writes nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select

from lab.engine import configure_engine, engine_options
from lab.models import COLUMN_DEFAULTS_OPTION, CONTACT_TEXT_MAX_LENGTH, Contact
from tests.oracle import REFERENCE

_CHOICE = re.compile(r'<option value="(\d+)">([^<]*)</option>')


def _contacts(engine: Engine) -> list[dict[str, Any]]:
    with engine.connect() as connection:
        return [dict(r) for r in connection.execute(select(Contact.__table__).order_by(Contact.id)).mappings()]


def _choices(client: Any) -> dict[int, str]:
    page = client.get("/transactions", query_string={"limit": 1}).data.decode()
    datalist = page[page.index('<datalist id="contacts">'):page.index("</datalist>")]
    return {int(i): name for i, name in _CHOICE.findall(datalist)}


def _utc(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def test_api_adds_a_contact_with_its_insert_time_and_the_page_offers_it(client, engine) -> None:  # type: ignore[no-untyped-def]
    assert len(_choices(client)) == len(REFERENCE.contacts)
    before = dt.datetime.now(dt.timezone.utc)
    response = client.post("/api/contacts", json={"name": "  Kraken desk ", "address": "0xabc"})
    after = dt.datetime.now(dt.timezone.utc)
    assert response.status_code == 201, response.data
    body = response.get_json()
    assert (body["name"], body["address"]) == ("Kraken desk", "0xabc")  # trimmed
    created = _utc(body["created_at"])
    assert before <= created <= after  # the time of this insert, not of the app's start
    stored = _contacts(engine)[-1]
    assert stored == {"id": body["id"], "name": "Kraken desk", "address": "0xabc", "created_at": created}
    assert _choices(client)[body["id"]] == "Kraken desk"  # the next page offers it

    second = client.post("/api/contacts", json={"name": "OTC desk"}).get_json()
    assert second["address"] is None and _utc(second["created_at"]) > created  # one time per row
    # The seed's contacts keep their deterministic times.
    assert [c["created_at"] for c in _contacts(engine)[:len(REFERENCE.contacts)]] == [
        c["created_at"] for c in REFERENCE.contacts]


def test_the_page_form_adds_a_contact_and_returns_to_the_list(client, engine) -> None:  # type: ignore[no-untyped-def]
    page = client.get("/transactions", query_string={"limit": 1}).data.decode()
    assert '<form class="add-contact" method="post" action="/contacts">' in page
    response = client.post("/contacts", data={"name": "Friend", "address": ""},
                           headers={"Referer": "http://localhost/transactions?type=in"})
    assert response.status_code == 303 and response.headers["Location"] == "/transactions?type=in"
    added = _contacts(engine)[-1]
    assert (added["name"], added["address"]) == ("Friend", None)
    assert _choices(client)[added["id"]] == "Friend"


@pytest.mark.parametrize(("body", "field"), [
    ({}, "name"),
    ({"name": None}, "name"),
    ({"name": "   "}, "name"),
    ({"name": 7}, "name"),
    ({"name": "x" * (CONTACT_TEXT_MAX_LENGTH + 1)}, "name"),
    ({"name": "nul\x00"}, "name"),
    ({"name": "ok", "address": 5}, "address"),
    ({"name": "ok", "address": "a" * (CONTACT_TEXT_MAX_LENGTH + 1)}, "address"),
    ({"name": "Contact 01"}, "name"),  # taken: 409
])
def test_bad_input_is_refused_naming_the_field_and_writes_nothing(client, engine, body, field) -> None:  # type: ignore[no-untyped-def]
    before = _contacts(engine)
    response = client.post("/api/contacts", json=body)
    assert response.status_code == (409 if body.get("name") == "Contact 01" else 400), response.data
    assert response.get_json()["field"] == field
    assert _contacts(engine) == before


def test_a_form_or_body_that_is_not_a_contact_is_refused(client, engine) -> None:  # type: ignore[no-untyped-def]
    before = _contacts(engine)
    assert client.post("/api/contacts", data="name=x").get_json()["field"] == "body"
    response = client.post("/contacts", data={"address": "0x1"})
    assert response.status_code == 400 and b"name" in response.data
    assert _contacts(engine) == before


def test_the_default_follows_columns_rule_a_callable_per_row_a_value_for_all(schema_ready: str) -> None:
    """lab/models.app_default: the app's callable is called for every row; a value (the result
    of calling it once) is every row's default, as `Column(default=...)` does."""
    once = dt.datetime(2026, 5, 1, 12, 0, 0, 123456, tzinfo=dt.timezone.utc)
    calls: list[dt.datetime] = []

    def clock() -> dt.datetime:
        calls.append(dt.datetime.now(dt.timezone.utc))
        return calls[-1]

    seen = {}
    for name, given in (("value", once), ("callable", clock)):
        engine = configure_engine(create_engine(schema_ready, **engine_options(schema_ready),
                                                execution_options={COLUMN_DEFAULTS_OPTION: {"contacts.created_at": given}}))
        try:
            with engine.begin() as connection:
                connection.execute(Contact.__table__.delete().where(Contact.name.like("default-%")))
                for n in range(2):
                    connection.execute(insert(Contact).values(name=f"default-{name}-{n}"))
                seen[name] = list(connection.scalars(
                    select(Contact.created_at).where(Contact.name.like(f"default-{name}-%")).order_by(Contact.id)))
                connection.execute(Contact.__table__.delete().where(Contact.name.like("default-%")))
        finally:
            engine.dispose()
    assert seen["value"] == [once, once]
    assert seen["callable"] == calls and calls[0] < calls[1]
