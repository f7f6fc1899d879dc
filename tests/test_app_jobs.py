"""The label-changed job (lab/jobs.py): sent once the edit is committed, read in the worker's
own app context, absent when no broker is configured. The broker here is kombu's in-memory
transport: the task is really published (Celery's signals fire); the worker's body runs
in-process through the same task class (its own app context, so its own session)."""

from __future__ import annotations

import importlib
from typing import Any, Iterator

import pytest
from celery import signals
from flask import Flask
from sqlalchemy import Engine, create_engine, select

from lab import jobs, seed
from lab.engine import configure_engine, engine_options
from lab.models import Transaction
from tests.test_app_edits import _labelled_row

MEMORY = {"LAB_BROKER_URL": "memory://", "LAB_RESULT_BACKEND": "cache+memory://", "LAB_JOBS_QUEUE": "test-jobs"}


def _app(module: str, schema_ready: str) -> tuple[Flask, Engine]:
    flask_app = importlib.import_module(module).create_app({"SQLALCHEMY_DATABASE_URI": schema_ready, "TESTING": True,
                                                            **MEMORY})
    with flask_app.app_context():
        engine: Engine = importlib.import_module(module).db.engine
    seed.seed(engine, 300)
    return flask_app, engine


@pytest.fixture
def auditor(schema_ready: str) -> Iterator[Engine]:
    engine = configure_engine(create_engine(schema_ready, **engine_options(schema_ready)))
    yield engine
    engine.dispose()


@pytest.fixture
def published(auditor: Engine) -> Iterator[list[dict[str, Any]]]:
    """Every task published, with the row's committed version at that moment (another connection)."""
    seen: list[dict[str, Any]] = []

    def receiver(sender: Any = None, body: Any = None, **_: Any) -> None:
        tx_id = body[0][0]
        with auditor.connect() as connection:
            version = connection.execute(select(Transaction.version).where(Transaction.id == tx_id)).scalar_one()
        seen.append({"task": sender, "id": tx_id, "committed_version": version})

    signals.before_task_publish.connect(receiver, weak=False)
    yield seen
    signals.before_task_publish.disconnect(receiver)


@pytest.mark.parametrize("module", ["fixed.app", "broken.enqueue_before_commit"])
def test_the_job_is_sent_after_the_commit_in_the_fixed_app_only(schema_ready: str, published: list[dict[str, Any]],
                                                                module: str) -> None:
    flask_app, engine = _app(module, schema_ready)
    try:
        row = _labelled_row()
        response = flask_app.test_client().post(f"/api/transactions/{row['id']}/label",
                                                json={"label": "audited", "version": 1})
        assert response.status_code == 200 and response.get_json()["version"] == 2
        assert response.get_json()["job"]
        assert published == [{"task": jobs.LABEL_CHANGED, "id": row["id"],
                              "committed_version": 2 if module == "fixed.app" else 1}]
        # The worker's body, in an app context (and a session) of its own: the committed row.
        outcome = flask_app.extensions["celery"].tasks[jobs.LABEL_CHANGED].apply(args=[row["id"]]).get()
        assert (outcome["version"], outcome["label"]) == (2, "audited")
        assert "now labelled 'audited' (version 2)" in outcome["notice"]
    finally:
        engine.dispose()


def test_a_refused_edit_and_a_form_edit(schema_ready: str, published: list[dict[str, Any]]) -> None:
    flask_app, engine = _app("fixed.app", schema_ready)
    try:
        client, row = flask_app.test_client(), _labelled_row()
        stale = client.post(f"/api/transactions/{row['id']}/label", json={"label": "late", "version": 7})
        assert stale.status_code == 409 and published == []  # nothing changed, nothing sent
        form = client.post(f"/transactions/{row['id']}/label", data={"label": "from the page", "version": "1"})
        assert form.status_code == 303
        assert published == [{"task": jobs.LABEL_CHANGED, "id": row["id"], "committed_version": 2}]
        reply = client.get("/api/jobs/no-such-job")
        assert reply.status_code == 200 and reply.get_json() == {"id": "no-such-job", "state": "PENDING", "result": None}
    finally:
        engine.dispose()


def test_no_broker_no_job(client: Any, published: list[dict[str, Any]]) -> None:
    row = _labelled_row()
    body = client.post(f"/api/transactions/{row['id']}/label", json={"label": "quiet", "version": 1}).get_json()
    assert body["version"] == 2 and "job" not in body and published == []
    assert client.get("/api/jobs/x").status_code == 404


def test_embedded_urls_need_no_server(tmp_path: Any) -> None:
    broker, backend = jobs.embedded_urls(tmp_path)
    assert broker == f"sqla+sqlite:///{tmp_path.resolve()}/broker.db"
    assert backend == f"db+sqlite:///{tmp_path.resolve()}/results.db"
    assert jobs.result_backend_for(broker) == backend
    assert jobs.result_backend_for("redis://127.0.0.1:6379/7") == "redis://127.0.0.1:6379/7"


def test_a_server_cell_without_its_broker_fails_naming_make_services(tmp_path: Any,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """The scenario's PostgreSQL and MariaDB cells need Redis: when it does not answer, the cell
    fails (INCONCLUSIVE in the runner) naming the URL and `make services`; it is never skipped."""
    from types import SimpleNamespace

    from lab.harness.server import free_port
    from scenarios.enqueue_before_commit import broker_urls

    url = f"redis://127.0.0.1:{free_port()}/7"
    monkeypatch.setenv("LAB_TEST_BROKER_URL", url)
    with pytest.raises(RuntimeError, match="make services") as failure:
        broker_urls(SimpleNamespace(backend="postgresql", workdir=tmp_path))  # type: ignore[arg-type]
    assert url in str(failure.value)
    broker, backend = broker_urls(SimpleNamespace(backend="sqlite", workdir=tmp_path))  # type: ignore[arg-type]
    assert broker.startswith("sqla+sqlite:///") and backend.startswith("db+sqlite:///")  # no server needed
