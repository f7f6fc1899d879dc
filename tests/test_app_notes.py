"""Appending a note to a label (POST /api/transactions/<id>/note), on every backend.

A note is a merge under a row lock: it takes no version, applies to the label as it is, bumps
the version, and must lose no edit committed meanwhile, even one whose lock it waited for.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, text

from lab.engine import configure_engine, engine_options
from lab.harness.probes import wait_for_row_lock_waiter
from tests.oracle import SEED_ROWS, db_row


def _row(label: str | None) -> dict[str, Any]:
    return next(r for r in SEED_ROWS if r["label"] == label)


def test_a_note_is_appended_once_and_bumps_the_version(client, engine) -> None:  # type: ignore[no-untyped-def]
    row = _row("salary")
    body = client.post(f"/api/transactions/{row['id']}/note", json={"note": "  taxed  "}).get_json()
    assert (body["id"], body["version"], body["label"]) == (row["id"], 2, "salary; taxed")
    assert body["amount"] == str(row["amount"])  # the whole row comes back
    # The same note again changes nothing: same version, no second copy.
    body = client.post(f"/api/transactions/{row['id']}/note", json={"note": "taxed"}).get_json()
    assert (body["version"], body["label"]) == (2, "salary; taxed")
    assert db_row(engine, row["id"])["label"] == "salary; taxed"
    # An unlabelled row gets the note as its label; a label edit then starts from the new version.
    bare = _row(None)
    body = client.post(f"/api/transactions/{bare['id']}/note", json={"note": "checked"}).get_json()
    assert (body["version"], body["label"]) == (2, "checked")
    assert client.post(f"/api/transactions/{bare['id']}/label", json={"label": "x", "version": 1}).status_code == 409


@pytest.mark.parametrize(("body", "field"), [
    ({}, "note"), ({"note": None}, "note"), ({"note": 3}, "note"), ({"note": "   "}, "note"),
    ({"note": "a;b"}, "note"), ({"note": "x" * 41}, "note"), ({"note": "nul\x00"}, "note"),
])
def test_a_bad_note_is_refused_and_changes_nothing(client, engine, body, field) -> None:  # type: ignore[no-untyped-def]
    row = _row("salary")
    response = client.post(f"/api/transactions/{row['id']}/note", json=body)
    assert response.status_code == 400 and response.get_json()["field"] == field
    assert db_row(engine, row["id"])["version"] == 1


def test_an_unknown_row_is_404_and_a_note_that_does_not_fit_is_409(client, engine) -> None:  # type: ignore[no-untyped-def]
    assert client.post("/api/transactions/999999/note", json={"note": "x"}).status_code == 404
    assert client.post("/api/transactions/99999999999/note", json={"note": "x"}).status_code == 404
    row = _row("salary")
    assert client.post(f"/api/transactions/{row['id']}/label", json={"label": "y" * 195, "version": 1}).status_code == 200
    response = client.post(f"/api/transactions/{row['id']}/note", json={"note": "too long"})
    assert response.status_code == 409 and response.get_json()["field"] == "note"
    assert db_row(engine, row["id"]) == {**db_row(engine, row["id"]), "version": 2, "label": "y" * 195}


def _other_writer_commits_while_the_note_waits(flask_app: Flask, url: str, tx_id: int) -> tuple[int, dict[str, Any]]:
    """Another writer changes the row and holds it; the note's request starts meanwhile (on the
    servers it reads the row, then waits for the writer's row lock; on SQLite it waits for the
    database's write lock, or begins after the commit); the writer commits; the note answers."""
    writer = configure_engine(create_engine(url, **engine_options(url)))
    outcome: dict[str, Any] = {}
    try:
        with writer.connect() as connection:
            if writer.dialect.name != "sqlite":
                connection = connection.execution_options(isolation_level="READ COMMITTED")
            else:
                connection = connection.execution_options(lab_sqlite_begin_immediate=True)
            connection.execute(text("UPDATE transactions SET label = 'by bob', version = version + 1 WHERE id = :id"),
                               {"id": tx_id})
            request = threading.Thread(target=lambda: outcome.update(
                response=flask_app.test_client().post(f"/api/transactions/{tx_id}/note", json={"note": "alice"})))
            request.start()
            if writer.dialect.name != "sqlite":
                assert wait_for_row_lock_waiter(writer, 10), "the note's request never waited for the row lock"
            connection.commit()
            request.join(timeout=20)
    finally:
        writer.dispose()
    response = outcome["response"]
    return response.status_code, response.get_json()


def test_a_note_keeps_an_edit_committed_while_it_waited_for_the_lock(app, engine, db_url) -> None:  # type: ignore[no-untyped-def]
    row = _row("salary")
    status, body = _other_writer_commits_while_the_note_waits(app, db_url, row["id"])
    assert (status, body["version"], body["label"]) == (200, 3, "by bob; alice")
    assert db_row(engine, row["id"])["label"] == "by bob; alice"


def test_without_populate_existing_the_note_overwrites_that_edit_on_the_servers(app, engine, db_url, backend) -> None:  # type: ignore[no-untyped-def]
    """broken/identity_map.py: the locking read returns the object loaded before the lock. On
    SQLite the same code loses nothing: no other writer can commit inside its transaction."""
    from broken.identity_map import create_app

    broken = create_app({"SQLALCHEMY_DATABASE_URI": db_url, "TESTING": True})
    row = _row("salary")
    status, body = _other_writer_commits_while_the_note_waits(broken, db_url, row["id"])
    if backend == "sqlite":
        assert (status, body["version"], body["label"]) == (200, 3, "by bob; alice")
    else:
        assert (status, body["version"], body["label"]) == (200, 2, "salary; alice")  # bob's label is gone
    assert db_row(engine, row["id"])["label"] == body["label"]
