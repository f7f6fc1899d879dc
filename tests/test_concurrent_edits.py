"""Twenty clients edit one transaction's label at the same moment, from the same version, under
gunicorn (2 workers x 4 threads), round after round, on each backend.

The promise of the fixed app's optimistic edits (queries._conditional_update: `UPDATE ...
WHERE id = :id AND version = :seen`): for each version exactly one edit is acknowledged (200,
with the next version), every other gets 409 naming the current version, nothing else (no
5xx, no lock error), and the row holds the label of the acknowledged edit. Judged from what
the clients were told and from the row read back from the database, not from the app's logs.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine, select

from lab.harness.server import Actor, GunicornServer, Reply
from lab.models import Transaction

CLIENTS = 20
ROUNDS = 12
TX_ID = 7


@pytest.fixture
def server(app: Flask, schema_ready: str, tmp_path: Path) -> Iterator[GunicornServer]:
    """The fixed app under gunicorn on the test's own seeded database (`app` seeded it)."""
    with GunicornServer("fixed.app:create_app()", env={"LAB_DATABASE_URL": schema_ready},
                        log_path=tmp_path / "gunicorn.log", workers=2, threads=4) as running:
        yield running


def _row(engine: Engine) -> tuple[str | None, int]:
    with engine.connect() as connection:
        label, version = connection.execute(
            select(Transaction.label, Transaction.version).where(Transaction.id == TX_ID)).one()
        return label, version


def _edit_at_once(port: int, labels: list[str], seen_version: int) -> list[Reply]:
    """Every client waits at a barrier, then posts its edit: the requests are in flight together."""
    barrier = threading.Barrier(len(labels))

    def edit(label: str) -> Reply:
        actor = Actor(f"client-{label}", port, timeout=30)
        barrier.wait()
        return actor.post_json(f"/api/transactions/{TX_ID}/label", {"label": label, "version": seen_version})

    with ThreadPoolExecutor(max_workers=len(labels)) as pool:
        return list(pool.map(edit, labels))


def test_one_edit_per_version_wins_the_others_get_409(server: GunicornServer, engine: Engine) -> None:
    _label, version = _row(engine)
    served_by: set[str] = set()
    for round_number in range(ROUNDS):
        labels = [f"round {round_number} client {client}" for client in range(CLIENTS)]
        replies = _edit_at_once(server.port, labels, version)
        statuses = Counter(reply.status for reply in replies)
        assert statuses == {200: 1, 409: CLIENTS - 1}, (round_number, statuses,
                                                        [r.text for r in replies if r.status not in (200, 409)][:3])
        (winner,) = [(label, reply) for label, reply in zip(labels, replies) if reply.status == 200]
        assert winner[1].json()["label"] == winner[0] and winner[1].json()["version"] == version + 1
        for reply in replies:
            if reply.status == 409:
                body = reply.json()
                assert body["field"] == "version" and body["current_version"] == version + 1, body
        assert _row(engine) == (winner[0], version + 1), round_number
        served_by |= {reply.served_by.split("/")[0] for reply in replies}
        version += 1
    assert len(served_by) == 2, f"both workers should have served edits: {served_by}"
