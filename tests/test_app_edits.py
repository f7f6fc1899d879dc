"""Edits of a label and of a contact, from the API and from the page's forms, on every backend.

A successful edit returns (or shows) version + 1 and the next read sees it; an edit from a
version that is no longer current gets 409 and changes nothing in the database.
"""

from __future__ import annotations

from typing import Any
from html.parser import HTMLParser
from urllib.parse import parse_qsl, urlsplit

from tests.oracle import REFERENCE, ROW_BY_ID, SEED_ROWS, WALLET_ADDRESS, api_ids, db_row, expected_ids, parse_page, snapshot

CONTACT_NAMES = {c["id"]: c["name"] for c in REFERENCE.contacts}


def _labelled_row() -> dict[str, Any]:
    return next(r for r in SEED_ROWS if r["label"] == "salary" and r["contact_id"] is None)


def _api_row(client: Any, tx_id: int) -> dict[str, Any]:
    """The row as a new GET of the list shows it (found through its own wallet and time)."""
    row = ROW_BY_ID[tx_id]
    stamp = row["occurred_at"].isoformat()
    body = client.get("/api/transactions", query_string={"wallet": WALLET_ADDRESS[row["wallet_id"]], "from": stamp, "limit": 200}).get_json()
    return next(item for item in body["items"] if item["id"] == tx_id)


def _html_row(client: Any, location: str, tx_id: int) -> dict[str, Any]:
    page = parse_page(client.get(location).data)
    return next(r for r in page.rows if r["id"] == tx_id)


def test_api_label_edit_bumps_version_and_is_read_back(client, engine) -> None:  # type: ignore[no-untyped-def]
    row = _labelled_row()
    response = client.post(f"/api/transactions/{row['id']}/label", json={"label": "  Monthly Salary  ", "version": 1})
    assert response.status_code == 200
    body = response.get_json()
    assert (body["id"], body["version"], body["label"]) == (row["id"], 2, "Monthly Salary")  # trimmed
    assert body["amount"] == str(row["amount"])  # the whole row comes back
    assert _api_row(client, row["id"])["label"] == "Monthly Salary"
    assert db_row(engine, row["id"]) == {"id": row["id"], "version": 2, "label": "Monthly Salary", "contact_id": None}
    # The exact-label filter sees the change at once, in both directions.
    assert row["id"] in api_ids(client, {"label": "Monthly Salary"})
    assert api_ids(client, {"label": "salary"}) == [i for i in expected_ids(label="salary") if i != row["id"]]

    # A second edit from the new version succeeds; 200 characters (not ASCII) fit exactly.
    long_label = "é" * 200
    body = client.post(f"/api/transactions/{row['id']}/label", json={"label": long_label, "version": 2}).get_json()
    assert (body["version"], body["label"]) == (3, long_label)
    assert db_row(engine, row["id"])["label"] == long_label


def test_an_empty_label_is_stored_as_null_and_counts_as_unlabelled(client, engine) -> None:  # type: ignore[no-untyped-def]
    unlabelled_before = expected_ids(unlabelled=True)
    first, second, third = [r for r in SEED_ROWS if r["label"] is not None][:3]
    for tx_id, value in ((first["id"], ""), (second["id"], "   "), (third["id"], None)):
        body = client.post(f"/api/transactions/{tx_id}/label", json={"label": value, "version": 1}).get_json()
        assert (body["label"], body["version"]) == (None, 2), value
        assert db_row(engine, tx_id)["label"] is None  # NULL, not ''
    ids = api_ids(client, {"unlabelled": "1"})
    assert set(ids) == set(unlabelled_before) | {first["id"], second["id"], third["id"]}
    assert len(ids) == len(unlabelled_before) + 3
    # The same from the form: an empty field clears the label.
    fourth = [r for r in SEED_ROWS if r["label"] is not None][3]
    response = client.post(f"/transactions/{fourth['id']}/label", data={"label": "", "version": "1", "return_to": "unlabelled=1"})
    assert response.status_code == 303
    assert db_row(engine, fourth["id"]) == {"id": fourth["id"], "version": 2, "label": None, "contact_id": fourth["contact_id"]}
    assert _html_row(client, response.headers["Location"] + "&limit=200", fourth["id"])["version"] == 2


def test_api_contact_edit_sets_and_clears(client, engine) -> None:  # type: ignore[no-untyped-def]
    row = next(r for r in SEED_ROWS if r["contact_id"] is None and r["type"] == "in")
    body = client.post(f"/api/transactions/{row['id']}/contact", json={"contact_id": 7, "version": 1}).get_json()
    assert (body["version"], body["contact"]) == (2, {"id": 7, "name": CONTACT_NAMES[7]})
    assert body["label"] == row["label"]  # the other field is untouched
    assert _api_row(client, row["id"])["contact"] == {"id": 7, "name": CONTACT_NAMES[7]}
    assert row["id"] in api_ids(client, {"contact": "7"})
    assert db_row(engine, row["id"])["contact_id"] == 7

    body = client.post(f"/api/transactions/{row['id']}/contact", json={"contact_id": None, "version": 2}).get_json()
    assert (body["version"], body["contact"]) == (3, None)
    assert _api_row(client, row["id"])["contact"] is None
    assert row["id"] not in api_ids(client, {"contact": "7"})
    assert db_row(engine, row["id"]) == {"id": row["id"], "version": 3, "label": row["label"], "contact_id": None}


def test_form_edits_redirect_back_and_show_on_reload(client, engine) -> None:  # type: ignore[no-untyped-def]
    wallet = WALLET_ADDRESS[8]
    listing = f"/transactions?wallet={wallet}&type=in&limit=7"
    page = parse_page(client.get(listing).data)
    assert [r["id"] for r in page.rows] == expected_ids(wallet_ids=[8], type="in")[:7]
    target = next(r for r in page.rows if r["contact_id"] is None)
    assert target["version"] == 1 and target["label"] == ROW_BY_ID[target["id"]]["label"]
    return_to = urlsplit(listing).query

    response = client.post(f"/transactions/{target['id']}/label", data={"label": "rent (May)", "version": "1", "return_to": return_to})
    assert response.status_code == 303
    location = response.headers["Location"]
    assert urlsplit(location).path == "/transactions"
    assert parse_qsl(urlsplit(location).query) == parse_qsl(return_to)  # back to the same filters
    shown = _html_row(client, location, target["id"])
    assert (shown["label"], shown["version"]) == ("rent (May)", 2)

    response = client.post(f"/transactions/{target['id']}/contact", data={"contact_id": "12", "version": "2", "return_to": return_to})
    assert response.status_code == 303
    shown = _html_row(client, response.headers["Location"], target["id"])
    assert (shown["contact_id"], shown["version"], shown["label"]) == (12, 3, "rent (May)")

    # An empty choice ("none") clears the contact.
    response = client.post(f"/transactions/{target['id']}/contact", data={"contact_id": "", "version": "3", "return_to": return_to})
    assert response.status_code == 303
    shown = _html_row(client, response.headers["Location"], target["id"])
    assert (shown["contact_id"], shown["version"]) == (None, 4)
    assert db_row(engine, target["id"]) == {"id": target["id"], "version": 4, "label": "rent (May)", "contact_id": None}

    # Without return_to the form goes back to the unfiltered list; a foreign URL is never a target.
    response = client.post(f"/transactions/{target['id']}/label", data={"label": "x", "version": "4"})
    assert (response.status_code, response.headers["Location"]) == (303, "/transactions")
    response = client.post(f"/transactions/{target['id']}/label", data={"label": "y", "version": "5", "return_to": "https://evil.example/"})
    assert (response.status_code, response.headers["Location"]) == (303, "/transactions")


class _Forms(HTMLParser):
    """Every form of a page as a browser submits it: action and the fields it carries."""

    def __init__(self) -> None:
        super().__init__()
        self.forms: list[dict[str, Any]] = []
        self.datalists: dict[str, list[str]] = {}
        self.selects = 0
        self._list: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "form":
            self.forms.append({"action": a.get("action"), "method": a.get("method"), "fields": {}})
        elif tag == "input" and self.forms and a.get("name"):
            self.forms[-1]["fields"][a["name"]] = {"value": a.get("value") or "", "list": a.get("list")}
        elif tag == "select":
            self.selects += 1
        elif tag == "datalist":
            self._list = self.datalists.setdefault(a.get("id") or "", [])
        elif tag == "option" and self._list is not None:
            self._list.append(a.get("value") or "")

    def handle_endtag(self, tag: str) -> None:
        if tag == "datalist":
            self._list = None


def test_the_page_edits_from_its_own_forms_and_returns_to_its_filters(client, engine) -> None:  # type: ignore[no-untyped-def]
    """Posted as a browser posts the page's forms (the fields they carry, the Referer the page
    asks for): both edits of a row work, and each comes back to the filtered list."""
    wallet = WALLET_ADDRESS[8]
    listing = f"http://localhost/transactions?wallet={wallet}&type=in&limit=7"
    page = client.get(listing)
    forms = _Forms()
    forms.feed(page.text)
    target = next(r for r in parse_page(page.data).rows if r["contact_id"] is None)
    label_form, contact_form = (f for f in forms.forms if f["action"] in (
        f"/transactions/{target['id']}/label", f"/transactions/{target['id']}/contact"))
    assert set(label_form["fields"]) == {"version", "label"} and label_form["method"] == "post"
    assert set(contact_form["fields"]) == {"version", "contact_id"}
    # The contact choices: one list for the page, every contact, by id.
    assert contact_form["fields"]["contact_id"]["list"] == "contacts" and forms.selects == 1  # the type filter
    assert forms.datalists["contacts"] == [str(c["id"]) for c in sorted(REFERENCE.contacts, key=lambda c: c["name"])]

    def submit(form: dict[str, Any], **typed: str) -> str:
        data = {name: field["value"] for name, field in form["fields"].items()} | typed
        response = client.post(form["action"], data=data, headers={"Referer": listing})
        assert response.status_code == 303, response.text[:300]
        location = response.headers["Location"]
        assert parse_qsl(urlsplit(location).query) == parse_qsl(urlsplit(listing).query)  # the same filters
        return location

    location = submit(label_form, label="rent (June)")
    assert _html_row(client, location, target["id"])["label"] == "rent (June)"
    fresh = _Forms()
    fresh.feed(client.get(location).text)
    contact_form = next(f for f in fresh.forms if f["action"] == f"/transactions/{target['id']}/contact")
    assert contact_form["fields"]["version"]["value"] == "2"  # the form carries the new version
    shown = _html_row(client, submit(contact_form, contact_id="12"), target["id"])
    assert (shown["contact_id"], shown["version"], shown["label"]) == (12, 3, "rent (June)")
    # A Referer from another site, or another page, is no place to return to.
    for version, referrer in ((3, "https://evil.example/transactions?type=in"), (4, "http://localhost/elsewhere?type=in")):
        response = client.post(f"/transactions/{target['id']}/label", data={"label": "x", "version": str(version)},
                               headers={"Referer": referrer})
        assert (response.status_code, response.headers["Location"]) == (303, "/transactions")


def test_a_50_row_page_stays_small_whatever_its_filters(client) -> None:  # type: ignore[no-untyped-def]
    """Under 40 KB for 50 rows: a contact list per row made it 133 KB, and a return_to per form
    would repeat a long filter query 100 times."""
    every_wallet = [("wallet", address) for address in WALLET_ADDRESS.values()]  # a 700-character query
    for params in ([], every_wallet + [("from", "2020-01-01"), ("to", "2030-01-01")]):
        page = client.get("/transactions", query_string=params + [("limit", "50")])
        rows = parse_page(page.data).rows
        assert len(rows) == 50 and len(page.data) < 40_000, (params, len(page.data))


def test_stale_api_edit_gets_409_and_changes_nothing(client, engine) -> None:  # type: ignore[no-untyped-def]
    row = _labelled_row()
    # Two users read version 1; the first edit wins, the second is refused.
    first = client.post(f"/api/transactions/{row['id']}/label", json={"label": "first", "version": 1})
    assert (first.status_code, first.get_json()["version"]) == (200, 2)
    before = snapshot(engine)
    second = client.post(f"/api/transactions/{row['id']}/label", json={"label": "second", "version": 1})
    assert second.status_code == 409
    error = second.get_json()
    assert (error["field"], error["current_version"]) == ("version", 2)
    assert "reload" in error["error"]
    assert snapshot(engine) == before
    assert db_row(engine, row["id"]) == {"id": row["id"], "version": 2, "label": "first", "contact_id": None}

    # The same for contacts, from an even older version and from a future one.
    for version in (1, 3):
        response = client.post(f"/api/transactions/{row['id']}/contact", json={"contact_id": 5, "version": version})
        assert response.status_code == 409 and response.get_json()["current_version"] == 2, version
    assert snapshot(engine) == before
    assert _api_row(client, row["id"])["label"] == "first"


def test_two_contact_edits_from_one_version(client, engine) -> None:  # type: ignore[no-untyped-def]
    row = next(r for r in SEED_ROWS if r["contact_id"] is not None)
    assert client.post(f"/api/transactions/{row['id']}/contact", json={"contact_id": 3, "version": 1}).status_code == 200
    late = client.post(f"/api/transactions/{row['id']}/contact", json={"contact_id": 4, "version": 1})
    assert late.status_code == 409 and late.get_json() | {"error": ""} == {"error": "", "field": "version", "current_version": 2}
    assert db_row(engine, row["id"])["contact_id"] == 3


def test_stale_form_edit_gets_an_error_page_and_changes_nothing(client, engine) -> None:  # type: ignore[no-untyped-def]
    row = _labelled_row()
    assert client.post(f"/transactions/{row['id']}/label", data={"label": "mine", "version": "1"}).status_code == 303
    before = snapshot(engine)
    for path, data in (
        (f"/transactions/{row['id']}/label", {"label": "theirs", "version": "1", "return_to": "type=in"}),
        (f"/transactions/{row['id']}/contact", {"contact_id": "9", "version": "1", "return_to": "type=in"}),
    ):
        response = client.post(path, data=data)
        assert response.status_code == 409 and response.mimetype == "text/html", path
        page = parse_page(response.data)
        assert (page.error_status, page.error_field) == (409, "version")
        assert "changed by someone else" in page.text and "version 2" in page.text
        assert snapshot(engine) == before
    assert db_row(engine, row["id"]) == {"id": row["id"], "version": 2, "label": "mine", "contact_id": None}


def test_json_edit_must_name_the_field_it_changes(client, engine) -> None:  # type: ignore[no-untyped-def]
    """`{"version": 1}` alone must not silently clear the label or the contact."""
    row = client.get("/api/transactions?limit=1").get_json()["items"][0]
    for path, field in (("label", "label"), ("contact", "contact_id")):
        reply = client.post(f"/api/transactions/{row['id']}/{path}", json={"version": row["version"]})
        assert reply.status_code == 400 and reply.get_json()["field"] == field
    after = client.get("/api/transactions?limit=1").get_json()["items"][0]
    assert after == row


def test_label_contains_folds_non_ascii_case_on_every_backend(client) -> None:  # type: ignore[no-untyped-def]
    row = client.get("/api/transactions?limit=1").get_json()["items"][0]
    reply = client.post(f"/api/transactions/{row['id']}/label", json={"label": "ÉCOLE fees", "version": row["version"]})
    assert reply.status_code == 200
    found = client.get("/api/transactions?label_contains=école").get_json()["items"]
    assert [r["id"] for r in found] == [row["id"]]
