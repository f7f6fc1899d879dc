"""Read routing (lab/routing.py): with a replica configured, reads of safe requests go to the
lab's replica (PostgreSQL's hot standby, MariaDB's GTID replica) and writes to the primary; a
client's read after its own edit waits, bounded, until the replica has applied the edit, or
reads from the primary. The replica's apply is held back by its delay, so "not applied yet" is
certain right after a commit. With no replica configured nothing changes, on every backend."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from lab import databases, replica, routing, seed
from lab.engine import configure_engine, engine_options
from lab.harness.server import free_port

SEED_SIZE = 100


def test_without_a_replica_every_statement_is_on_the_primary(client: Any) -> None:
    listed = client.get("/api/transactions", query_string={"limit": 1})
    assert listed.status_code == 200 and routing.READ_HEADER not in listed.headers
    row = listed.get_json()["items"][0]
    edited = client.post(f"/api/transactions/{row['id']}/label", json={"label": "primary only", "version": row["version"]})
    assert edited.status_code == 200, edited.get_data(as_text=True)
    assert routing.POSITION_HEADER not in edited.headers and "Set-Cookie" not in edited.headers
    assert client.get("/api/transactions", query_string={"limit": 1}).get_json()["items"][0]["label"] == "primary only"


# Which server answered a statement: 1 on the replica, 0 on the primary.
ON_REPLICA_SQL = {"postgresql": "SELECT pg_is_in_recovery()::int", "mariadb": "SELECT @@read_only"}
SCHEMES = {"postgresql": "postgresql+psycopg", "mariadb": "mysql+pymysql"}


def _required_or_skip(backend: str, error: Exception) -> None:
    if backend in databases.required_backends():
        pytest.fail(f"required backend unavailable: {error}", pytrace=False)
    pytest.skip(str(error))


@pytest.fixture(scope="module", params=("postgresql", "mariadb"))
def primary_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A seeded private database on the primary, once the replica has applied it."""
    backend = request.param
    try:
        url = databases.private_database(backend, f"lab_routing_{databases.owner_tag('main')}",
                                         tmp_path_factory.mktemp("routing"))
        standby_of_server = replica.replica_url(databases.server_url(backend).render_as_string(hide_password=False))
    except databases.BackendUnavailable as error:
        _required_or_skip(backend, error)
    engine = configure_engine(create_engine(url, **engine_options(url)))
    watcher = create_engine(standby_of_server, isolation_level="AUTOCOMMIT")
    try:
        seed.create_schema(engine, drop_first=True)
        seed.seed(engine, SEED_SIZE)
        with engine.connect() as primary:
            position = replica.primary_position(primary)
        try:
            with watcher.connect() as standby:
                replica.wait_for_replay(standby, position, timeout=15)
        except DBAPIError as error:
            _required_or_skip(backend, databases.BackendUnavailable(f"the replica does not answer: {error.orig}"))
        yield url
    finally:
        engine.dispose()
        watcher.dispose()
        databases.drop_database(url)


def _settled(primary_url: str) -> None:
    """Wait until the replica has applied every earlier test's edits (a fresh client reads there)."""
    primary = create_engine(primary_url)
    standby = create_engine(replica.replica_url(primary_url), isolation_level="AUTOCOMMIT")
    try:
        with primary.connect() as on_primary, standby.connect() as on_standby:
            replica.wait_for_replay(on_standby, replica.primary_position(on_primary), timeout=15)
    finally:
        primary.dispose()
        standby.dispose()


def _app(module: str, primary_url: str, **config: Any) -> Flask:
    _settled(primary_url)
    create_app = importlib.import_module(module).create_app
    return create_app({"SQLALCHEMY_DATABASE_URI": primary_url, "TESTING": True,
                       routing.REPLICA_URL_KEY: replica.replica_url(primary_url), **config})


def _newest(client: Any) -> tuple[dict[str, Any], str]:
    reply = client.get("/api/transactions", query_string={"limit": 1})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply.get_json()["items"][0], reply.headers.get(routing.READ_HEADER, "")


def _edit(client: Any, row: dict[str, Any], label: str) -> Any:
    reply = client.post(f"/api/transactions/{row['id']}/label", json={"label": label, "version": row["version"]})
    assert reply.status_code == 200, reply.get_data(as_text=True)
    return reply


def test_the_fixed_app_reads_the_replica_and_waits_for_the_clients_own_write(primary_url: str) -> None:
    client = _app("fixed.app", primary_url).test_client()
    row, where = _newest(client)
    assert where.startswith("replica; replayed "), where
    edited = _edit(client, row, "read your writes")
    position = edited.headers[routing.POSITION_HEADER]
    assert f"{routing.POSITION_COOKIE}={position}" in edited.headers["Set-Cookie"]
    after, where = _newest(client)  # sends the cookie back, at once
    assert after["version"] == row["version"] + 1 and after["label"] == "read your writes"
    assert where.startswith(f"replica; replayed {position}; waited "), where
    waited = float(where.rsplit("waited ", 1)[1].removesuffix(" s"))
    assert waited > 0.2, where  # the replica's apply delay, measured: the replica really was behind
    print(f"the read after the edit waited {waited:.3f} s for the replica to apply {position}")


def test_without_read_your_writes_the_read_right_after_the_edit_is_stale(primary_url: str) -> None:
    client = _app("broken.replica_lag", primary_url).test_client()
    row, _ = _newest(client)
    edited = _edit(client, row, "lost in the lag")
    assert routing.POSITION_HEADER not in edited.headers and "Set-Cookie" not in edited.headers
    after, where = _newest(client)
    assert where.startswith("replica; replayed "), where
    assert after["version"] == row["version"] and after["label"] != "lost in the lag"  # the old row


def test_a_position_the_replica_has_not_replayed_in_time_is_read_from_the_primary(primary_url: str) -> None:
    client = _app("fixed.app", primary_url, **{routing.WAIT_KEY: "0.05"}).test_client()
    row, _ = _newest(client)
    position = _edit(client, row, "too far behind").headers[routing.POSITION_HEADER]
    after, where = _newest(client)
    assert after["label"] == "too far behind"
    assert where.startswith("primary; the replica has applied up to ") and f"not {position}" in where, where


def test_an_api_client_sends_the_position_back_in_a_header(primary_url: str) -> None:
    app = _app("fixed.app", primary_url)
    writer, reader = app.test_client(), app.test_client()  # the reader has no cookie
    row, _ = _newest(writer)
    position = _edit(writer, row, "header carried").headers[routing.POSITION_HEADER]
    reply = reader.get("/api/transactions", query_string={"limit": 1}, headers={routing.POSITION_HEADER: position})
    assert reply.get_json()["items"][0]["label"] == "header carried"
    assert "; waited " in reply.headers[routing.READ_HEADER]


def test_a_malformed_position_is_ignored(primary_url: str) -> None:
    client = _app("fixed.app", primary_url).test_client()
    client.set_cookie(routing.POSITION_COOKIE, "0/1'; SELECT 1")
    _, where = _newest(client)
    assert where.startswith("replica; replayed ") and "waited" not in where, where


def test_a_replica_that_does_not_answer_sends_reads_to_the_primary(primary_url: str, caplog: pytest.LogCaptureFixture) -> None:
    scheme = SCHEMES[replica.backend_of(primary_url)]
    down = f"{scheme}://lab:lab@127.0.0.1:{free_port()}/nowhere"
    client = _app("fixed.app", primary_url, **{routing.REPLICA_URL_KEY: down}).test_client()
    row, where = _newest(client)
    assert where.startswith(f"primary; the replica {scheme}://lab:***@127.0.0.1:") and "does not answer" in where, where
    _edit(client, row, "primary answers")
    assert _newest(client)[0]["label"] == "primary answers"
    assert any("does not answer" in record.getMessage() for record in caplog.records)


def test_writes_and_reads_of_a_write_request_are_on_the_primary(primary_url: str) -> None:
    app = _app("fixed.app", primary_url)
    from fixed.app import db

    on_replica = text(ON_REPLICA_SQL[replica.backend_of(primary_url)])
    with app.test_request_context("/api/transactions/1/label", method="POST"):
        assert db.session.execute(on_replica).scalar_one() == 0
    with app.test_request_context("/api/transactions"):
        assert db.session.execute(on_replica).scalar_one() == 1
    with app.app_context():  # a job outside any request
        assert db.session.execute(on_replica).scalar_one() == 0


def test_a_replica_is_refused_without_the_routing_session(primary_url: str) -> None:
    from flask_sqlalchemy import SQLAlchemy

    from lab.models import Base

    app = Flask(__name__)
    app.config.update(SQLALCHEMY_DATABASE_URI=primary_url, LAB_REPLICA_URL=replica.replica_url(primary_url))
    plain = SQLAlchemy(model_class=Base)
    plain.init_app(app)
    with pytest.raises(RuntimeError, match="RoutingSession"):
        routing.install(app, plain)

