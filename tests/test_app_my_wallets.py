""""My wallets": the visitor's chosen wallets, kept as ids in Flask's signed cookie session.

The cookie holds only what the visitor chose; names and chains are read from the database on
every request, so a rename by another writer shows at once. Bad input gets 400 naming
`wallet_ids` and stores nothing (the next GET shows the previous choice). The key that signs
the cookie is shared by every process that serves the app (LAB_SECRET_KEY, or one key file).
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from lab import web
from tests.oracle import REFERENCE

WALLETS = {w["id"]: w for w in REFERENCE.wallets}


def _expected(*ids: int) -> list[dict[str, Any]]:
    return [{"id": i, "address": WALLETS[i]["address"], "chain": WALLETS[i]["chain"], "name": WALLETS[i]["name"]}
            for i in ids]


def _choose(client: Any, value: Any) -> Any:
    return client.put("/api/my-wallets", json={"wallet_ids": value})


def _session_cookie(client: Any) -> Any:
    return client.get_cookie("session")


def test_no_cookie_no_wallets_and_no_cookie_set(client: Any) -> None:
    reply = client.get("/api/my-wallets")
    assert reply.status_code == 200 and reply.get_json() == {"wallets": []}
    assert "Set-Cookie" not in reply.headers  # nothing chosen, nothing written


def test_choose_then_read_in_the_order_chosen(client: Any) -> None:
    reply = _choose(client, [3, 1])
    assert reply.status_code == 200 and reply.get_json() == {"wallets": _expected(3, 1)}
    assert client.get("/api/my-wallets").get_json() == {"wallets": _expected(3, 1)}
    assert _choose(client, []).get_json() == {"wallets": []}
    assert client.get("/api/my-wallets").get_json() == {"wallets": []}


def test_the_cookie_holds_ids_only(app: Any, client: Any) -> None:
    _choose(client, [2, 5])
    with app.test_request_context():
        serializer = app.session_interface.get_signing_serializer(app)
    assert serializer.loads(_session_cookie(client).value) == {"my_wallets": [2, 5]}


def test_a_rename_in_the_database_shows_at_once(client: Any, engine: Any) -> None:
    _choose(client, [4])
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET name = 'Cold storage' WHERE id = 4"))
    assert client.get("/api/my-wallets").get_json()["wallets"][0]["name"] == "Cold storage"


def test_a_deleted_wallet_drops_out_of_the_list(client: Any, engine: Any) -> None:
    _choose(client, [6, 7])
    with engine.begin() as connection:
        connection.execute(text("DELETE FROM transactions WHERE wallet_id = 7"))
        connection.execute(text("DELETE FROM wallets WHERE id = 7"))
    reply = client.get("/api/my-wallets")
    assert reply.status_code == 200 and reply.get_json() == {"wallets": _expected(6)}


@pytest.mark.parametrize("value, message", [
    (None, "JSON array"),
    ("1,2", "JSON array"),
    ({"id": 1}, "JSON array"),
    ([0], "whole numbers >= 1"),
    ([-1], "whole numbers >= 1"),
    (["1"], "whole numbers >= 1"),
    ([1.0], "whole numbers >= 1"),
    ([True], "whole numbers >= 1"),
    ([None], "whole numbers >= 1"),
    ([[1]], "whole numbers >= 1"),
    ([1, 1], "at most once"),
    (list(range(1, 22)), "at most 20"),
    ([99], "no wallet with id 99"),
    ([1, 10**20], "no wallet with id 100000000000000000000"),
])
def test_bad_choices_are_refused_naming_the_field_and_store_nothing(client: Any, value: Any, message: str) -> None:
    _choose(client, [2])
    before = _session_cookie(client).value
    reply = _choose(client, value)
    assert reply.status_code == 400, reply.get_data(as_text=True)
    body = reply.get_json()
    assert body["field"] == "wallet_ids" and message in body["error"], body
    assert "Set-Cookie" not in reply.headers
    assert _session_cookie(client).value == before
    assert client.get("/api/my-wallets").get_json() == {"wallets": _expected(2)}


def test_a_body_without_the_field_or_not_json_is_refused(client: Any) -> None:
    reply = client.put("/api/my-wallets", json={"wallets": [1]})
    assert reply.status_code == 400 and reply.get_json()["field"] == "wallet_ids"
    reply = client.put("/api/my-wallets", data="wallet_ids=1")
    assert reply.status_code == 400 and reply.get_json()["field"] == "body"
    assert client.get("/api/my-wallets").get_json() == {"wallets": []}


def test_a_cookie_of_another_shape_counts_as_none(app: Any, client: Any) -> None:
    # Signed with the app's key (so it is one this app wrote), but of an older shape.
    with app.test_request_context():
        serializer = app.session_interface.get_signing_serializer(app)
        forged = serializer.dumps({"my_wallets": [{"id": 1, "name": "Wallet 01"}]})
    client.set_cookie("session", forged)
    assert client.get("/api/my-wallets").get_json() == {"wallets": []}


def test_a_cookie_signed_with_another_key_is_ignored(app: Any, client: Any) -> None:
    from flask import Flask

    other = Flask("other")
    other.secret_key = "another key entirely, long enough to be accepted"
    with other.test_request_context():
        forged = other.session_interface.get_signing_serializer(other).dumps({"my_wallets": [1]})
    client.set_cookie("session", forged)
    assert client.get("/api/my-wallets").get_json() == {"wallets": []}


def test_cookie_flags(client: Any) -> None:
    cookie = _choose(client, [1]).headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Secure" not in cookie  # the lab serves plain http on 127.0.0.1; LAB_SESSION_COOKIE_SECURE=1 behind TLS


def test_secure_flag_behind_tls(schema_ready: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from fixed.app import create_app

    monkeypatch.setenv("LAB_SESSION_COOKIE_SECURE", "1")
    secure = create_app({"SQLALCHEMY_DATABASE_URI": schema_ready, "TESTING": True})
    assert secure.config["SESSION_COOKIE_SECURE"] is True


def test_two_processes_with_one_key_accept_each_others_cookie(schema_ready: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """What two gunicorn workers need: the same key from the environment, not one per process."""
    from fixed.app import create_app

    monkeypatch.setenv("LAB_SECRET_KEY", "k" * 40)
    first = create_app({"SQLALCHEMY_DATABASE_URI": schema_ready})
    second = create_app({"SQLALCHEMY_DATABASE_URI": schema_ready})
    assert first.secret_key == second.secret_key == "k" * 40
    one, two = first.test_client(), second.test_client()
    assert _choose(one, [8]).status_code == 200
    two.set_cookie("session", _session_cookie(one).value)
    assert [w["id"] for w in two.get("/api/my-wallets").get_json()["wallets"]] == [8]


def test_a_short_key_is_refused(schema_ready: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from fixed.app import create_app

    monkeypatch.setenv("LAB_SECRET_KEY", "short")
    with pytest.raises(RuntimeError, match="LAB_SECRET_KEY is 5 characters long"):
        create_app({"SQLALCHEMY_DATABASE_URI": schema_ready})


def test_the_development_key_is_made_once_and_shared(tmp_path: Path) -> None:
    path = tmp_path / "var" / "secret_key"
    keys: list[str] = []
    threads = [threading.Thread(target=lambda: keys.append(web.development_secret_key(path))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(set(keys)) == 1 and len(keys[0]) >= web.SECRET_KEY_MIN_LENGTH
    assert web.development_secret_key(path) == keys[0]
    assert path.stat().st_mode & 0o777 == 0o600
    assert [p.name for p in path.parent.iterdir()] == ["secret_key"]  # no temporary file left


def test_the_transactions_api_sets_no_cookie(client: Any) -> None:
    reply = client.get("/api/transactions", query_string={"limit": 1})
    assert reply.status_code == 200 and "Set-Cookie" not in reply.headers


def test_the_page_shows_my_wallets_from_the_database(client: Any, engine: Any) -> None:
    assert 'class="my-wallets"' not in client.get("/transactions").get_data(as_text=True)  # none chosen: nothing
    _choose(client, [5, 2])
    with engine.begin() as connection:
        connection.execute(text("UPDATE wallets SET name = 'Savings <main>' WHERE id = 2"))
    page = client.get("/transactions", query_string={"limit": 1}).get_data(as_text=True)
    line = next(line for line in page.splitlines() if 'class="my-wallets"' in line)
    assert line.index('data-wallet-id="5"') < line.index('data-wallet-id="2"')
    assert ">Savings &lt;main&gt;</a>" in line and f"({WALLETS[5]['chain']})" in line  # escaped, fresh
    assert f'href="/transactions?wallet={WALLETS[5]["address"]}"' in line


def test_the_page_without_a_choice_is_unchanged_by_the_feature(app: Any, client: Any) -> None:
    """No cookie, no choice: the page's bytes are those of the template without the block."""
    page = client.get("/transactions", query_string={"limit": 2}).get_data(as_text=True)
    assert "My wallets" not in page and "<h1>Transactions</h1>\n<form" in page
