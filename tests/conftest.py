"""Backends for the tests: SQLite always, PostgreSQL and MariaDB from LAB_TEST_* variables.

Each pytest-xdist worker gets its own database on each backend. A server backend that is not
configured or does not answer is skipped, unless LAB_REQUIRE_BACKENDS names it (CI sets
`all`): then its tests fail with the reason.
"""

from __future__ import annotations

from typing import Iterator

import pytest
from flask import Flask
from sqlalchemy import Engine

from lab import databases, seed
from lab.databases import BACKENDS, BackendUnavailable

TEST_SEED_SIZE = 300


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    # Every test that needs a database runs once per backend.
    if "backend" in metafunc.fixturenames:
        metafunc.parametrize("backend", BACKENDS, scope="session")


def _worker() -> str:
    return databases.owner_tag("main")


@pytest.fixture(scope="session")
def db_url(backend: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An empty database of this backend, private to this xdist worker."""
    try:
        url = databases.private_database(backend, f"lab_test_{_worker()}", tmp_path_factory.mktemp(backend))
    except BackendUnavailable as error:
        if backend in databases.required_backends():
            pytest.fail(f"required backend unavailable: {error}", pytrace=False)
        pytest.skip(str(error))
    yield url
    databases.drop_database(url)


@pytest.fixture(scope="session")
def schema_ready(db_url: str) -> str:
    from sqlalchemy import create_engine

    from lab.engine import configure_engine, engine_options

    engine = configure_engine(create_engine(db_url, **engine_options(db_url)))
    try:
        seed.create_schema(engine, drop_first=True)
    finally:
        engine.dispose()
    return db_url


@pytest.fixture
def app(schema_ready: str) -> Iterator[Flask]:
    """The fixed app on this backend, with the deterministic 300-row data set, fresh per test."""
    from fixed.app import create_app, db

    flask_app = create_app({"SQLALCHEMY_DATABASE_URI": schema_ready, "TESTING": True})
    with flask_app.app_context():
        engine: Engine = db.engine
    seed.seed(engine, TEST_SEED_SIZE)
    yield flask_app
    flask_app.extensions["asset_prices"].stop()  # its refresher, if a request started it
    engine.dispose()


@pytest.fixture
def engine(app: Flask) -> Engine:
    from fixed.app import db

    with app.app_context():
        return db.engine


@pytest.fixture
def client(app: Flask):  # type: ignore[no-untyped-def]
    return app.test_client()
