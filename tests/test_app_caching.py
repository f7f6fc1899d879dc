"""The cached details read (lab/caching.py): `GET /api/transactions/<id>` from a shared store,
deleted by every successful edit of that row once it has committed; off without LAB_CACHE_DIR."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import Engine, text

from lab import seed
from tests.test_app_edits import _labelled_row


def _app(module: str, schema_ready: str, cache_dir: Path | None) -> tuple[Flask, Engine]:
    config: dict[str, Any] = {"SQLALCHEMY_DATABASE_URI": schema_ready, "TESTING": True}
    if cache_dir is not None:
        config["LAB_CACHE_DIR"] = str(cache_dir)
    flask_app = importlib.import_module(module).create_app(config)
    with flask_app.app_context():
        engine: Engine = importlib.import_module(module).db.engine
    seed.seed(engine, 300)
    return flask_app, engine


def _sneak_label(engine: Engine, tx_id: int, label: str) -> None:
    """Change the row behind the app's back (no edit route, so no invalidation)."""
    with engine.begin() as connection:
        connection.execute(text("UPDATE transactions SET label = :label WHERE id = :id"), {"label": label, "id": tx_id})


def test_details_are_served_from_the_cache_until_an_edit_deletes_them(schema_ready: str, tmp_path: Path) -> None:
    app, engine = _app("fixed.app", schema_ready, tmp_path / "cache")
    client, row = app.test_client(), _labelled_row()
    first = client.get(f"/api/transactions/{row['id']}").get_json()
    assert (first["id"], first["version"], first["label"]) == (row["id"], 1, row["label"])
    _sneak_label(engine, row["id"], "changed behind the app")
    assert client.get(f"/api/transactions/{row['id']}").get_json()["label"] == row["label"]  # a cache hit
    for path, body in ((f"/api/transactions/{row['id']}/label", {"label": "by the api", "version": 1}),
                       (f"/api/transactions/{row['id']}/contact", {"contact_id": None, "version": 2}),
                       (f"/api/transactions/{row['id']}/note", {"note": "a note"})):
        acknowledged = client.post(path, json=body).get_json()
        assert client.get(f"/api/transactions/{row['id']}").get_json() == acknowledged  # deleted at the edit
    form = client.post(f"/transactions/{row['id']}/label", data={"label": "by the form", "version": "4"})
    assert form.status_code == 303
    assert client.get(f"/api/transactions/{row['id']}").get_json()["label"] == "by the form"
    engine.dispose()


def test_a_refused_edit_keeps_the_cached_details(schema_ready: str, tmp_path: Path) -> None:
    app, engine = _app("fixed.app", schema_ready, tmp_path / "cache")
    client, row = app.test_client(), _labelled_row()
    client.get(f"/api/transactions/{row['id']}")
    _sneak_label(engine, row["id"], "changed behind the app")
    refused = client.post(f"/api/transactions/{row['id']}/label", json={"label": "late", "version": 99})
    assert refused.status_code == 409
    assert client.get(f"/api/transactions/{row['id']}").get_json()["label"] == row["label"]  # not deleted
    engine.dispose()


def test_without_a_cache_dir_every_read_goes_to_the_database(schema_ready: str) -> None:
    app, engine = _app("fixed.app", schema_ready, None)
    client, row = app.test_client(), _labelled_row()
    assert client.get(f"/api/transactions/{row['id']}").get_json()["label"] == row["label"]
    _sneak_label(engine, row["id"], "changed behind the app")
    assert client.get(f"/api/transactions/{row['id']}").get_json()["label"] == "changed behind the app"
    engine.dispose()


@pytest.mark.parametrize("path", ["/api/transactions/999999999", "/api/transactions/abc", "/api/transactions/0"])
def test_an_unknown_id_is_a_clear_404(schema_ready: str, tmp_path: Path, path: str) -> None:
    app, engine = _app("fixed.app", schema_ready, tmp_path / "cache")
    assert app.test_client().get(path).status_code == 404
    engine.dispose()


def test_the_broken_copy_deletes_a_key_its_read_never_used(schema_ready: str, tmp_path: Path) -> None:
    app, engine = _app("broken.cache_key_mismatch", schema_ready, tmp_path / "cache")
    client, row = app.test_client(), _labelled_row()
    client.get(f"/api/transactions/{row['id']}")
    acknowledged = client.post(f"/api/transactions/{row['id']}/label", json={"label": "by the api", "version": 1})
    assert acknowledged.get_json()["version"] == 2
    stale = client.get(f"/api/transactions/{row['id']}").get_json()
    assert (stale["version"], stale["label"]) == (1, row["label"])
    engine.dispose()
