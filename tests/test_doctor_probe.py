"""`flask stale-doctor probe`: the layer it names for one row is the layer that is stale.

Each broken app holds the old row in a different layer; an outside writer (a direct
connection, like another service) changes the row, then the probe compares the row read on a
new connection, what the app serves, and what the serving worker holds. The fixed app agrees
with the database. The apps run under gunicorn with the doctor installed as `make doctor` does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest
from sqlalchemy import create_engine, text

from lab import databases
from lab.engine import REPO_ROOT
from lab.harness.runner import prepare_database
from lab.harness.scenario import DOCTOR_ENV
from lab.harness.server import Actor, GunicornServer
from stale_doctor import probe

pytestmark = pytest.mark.slow
PAGE = "/api/transactions?limit=5"


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    url = databases.private_database("sqlite", "probe", tmp_path)
    prepare_database(url, 100)
    yield url


def serve(module: str, db_url: str, tmp_path: Path) -> GunicornServer:
    env = {**DOCTOR_ENV, "LAB_DATABASE_URL": db_url, "LAB_CONTROL_DIR": str(tmp_path),
           "STALE_DOCTOR_FILE": str(tmp_path / "doctor.jsonl")}
    return GunicornServer(f"{module}:create_app()", env, tmp_path / "gunicorn.log", workers=1, threads=1)


def newest_row(port: int) -> dict:  # type: ignore[type-arg]
    reply = Actor("reader", port).get(PAGE)
    assert reply.status == 200, reply.text
    return dict(reply.json()["items"][0])


def outside_edit(db_url: str, row_id: int) -> int:
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text("UPDATE transactions SET label = 'edited elsewhere', version = version + 1 WHERE id = :i"),
                         {"i": row_id})
            return int(conn.execute(text("SELECT version FROM transactions WHERE id = :i"), {"i": row_id}).scalar_one())
    finally:
        engine.dispose()


@pytest.mark.parametrize(("module", "layer"), [
    ("broken.global_cache", "cache"),
    ("broken.http_cache", "response cache"),
    ("broken.long_transaction", "database snapshot"),
    ("fixed.app", "none"),
])
def test_the_probe_names_the_stale_layer(module: str, layer: str, database: str, tmp_path: Path) -> None:
    with serve(module, database, tmp_path) as server:
        row = newest_row(server.port)  # the app now holds this row in its layer (cache, snapshot...)
        version = outside_edit(database, row["id"])
        result = probe.probe(None, database, "transactions", str(row["id"]), "version",  # type: ignore[arg-type]
                             f"http://127.0.0.1:{server.port}{PAGE}")
    assert result.fresh == version == row["version"] + 1
    assert result.inside is not None and "error" not in result.inside, result.inside
    assert (result.stale_layer, result.served) == (layer, row["version"] if layer != "none" else version), result
    printed = "\n".join(result.lines("transactions", str(row["id"]), "version", PAGE))
    assert f"stale layer: {layer}" in printed


def test_the_probe_command_prints_the_layers_and_fails_on_a_stale_one(database: str, tmp_path: Path) -> None:
    with serve("broken.long_transaction", database, tmp_path) as server:
        row = newest_row(server.port)
        outside_edit(database, row["id"])
        env = {**os.environ, **DOCTOR_ENV, "LAB_DATABASE_URL": database}
        done = subprocess.run(
            [sys.executable, "-m", "flask", "--app", "broken.long_transaction", "stale-doctor", "probe", "transactions",
             str(row["id"]), "--url", f"http://127.0.0.1:{server.port}{PAGE}"],
            cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60,
        )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "stale layer: database snapshot" in done.stdout, done.stdout + done.stderr
    assert "database, read on a new connection" in done.stdout and "open transaction of session-" in done.stdout


def test_the_probe_layers_header_is_only_for_loopback_and_the_probe_setting() -> None:
    assert probe.parse_target("transactions:5:label") == ("transactions", "5", "label")
    with pytest.raises(ValueError):
        probe.parse_target("transactions; DROP TABLE x:5")
    assert probe.judge(3, 3, None)[0] == "none"
    assert probe.judge(3, 2, None)[0] == "between the database and the page"
    assert probe.served_value(json.dumps({"items": [{"id": 5, "version": 2}]}).encode(), "application/json", "5", "version") == 2
    assert probe.served_value(b'<tr data-id="5" data-version="7">', "text/html", "5", "version") == 7
