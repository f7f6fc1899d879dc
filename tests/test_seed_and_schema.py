"""The seed generator, the seeded database and the schema's life cycle (made by the CLI only)."""

from __future__ import annotations

import datetime as dt
import os
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, insert, select
from sqlalchemy.exc import IntegrityError, OperationalError

from lab import seed
from lab.models import LABEL_MAX_LENGTH, TRANSACTION_TYPES, Contact, Transaction, Wallet
from tests.oracle import SEED_ROWS, snapshot

REPO_ROOT = Path(__file__).resolve().parent.parent


def _database_rows(engine: Engine) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Every table as plain dicts, read through the column types (aware UTC, Decimal)."""
    with engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            [dict(r) for r in connection.execute(select(model.__table__).order_by(model.__table__.c.id)).mappings()]
            for model in (Transaction, Wallet, Contact)
        )


# ---- the generator -------------------------------------------------------------------------

def test_same_seed_same_rows_other_seed_other_rows() -> None:
    again = list(seed.transactions(300, seed.DEFAULT_SEED))
    assert again == SEED_ROWS  # the oracle's rows: the fixture seeds with the default seed
    assert seed.reference_data(seed.DEFAULT_SEED) == seed.reference_data()
    other = list(seed.transactions(300, seed=7))
    assert len(other) == 300 and [r["id"] for r in other] == list(range(1, 301))
    differing = sum(1 for a, b in zip(SEED_ROWS, other) if (a["tx_hash"], a["amount"], a["occurred_at"]) != (b["tx_hash"], b["amount"], b["occurred_at"]))
    assert differing == 300
    assert seed.reference_data(7).wallets != seed.reference_data(42).wallets
    # A larger data set starts with the same rows: sizes are comparable across runs.
    assert list(seed.transactions(1000))[:300] == SEED_ROWS


def test_generated_rows_keep_the_stated_distribution() -> None:
    rows = list(seed.transactions(2_000))
    assert [r["id"] for r in rows] == list(range(1, 2_001))
    start = seed.END - dt.timedelta(microseconds=seed.SPAN_MICROSECONDS)
    assert all(start < r["occurred_at"] <= seed.END and r["occurred_at"].tzinfo == dt.timezone.utc for r in rows)
    assert {r["type"] for r in rows} == set(TRANSACTION_TYPES)
    assert {r["label"] for r in rows} - {None} == set(seed.LABELS)
    assert all(len(label) <= LABEL_MAX_LENGTH for label in seed.LABELS)
    assert 0.3 < sum(r["label"] is not None for r in rows) / len(rows) < 0.5
    assert all(r["contact_id"] is None for r in rows if r["type"] in ("swap", "fee"))
    assert all(r["amount"].as_tuple().exponent == -18 for r in rows)
    # The legs of one event share its hash and timestamp (equal timestamps are common).
    by_hash: dict[str, set[dt.datetime]] = {}
    for r in rows:
        by_hash.setdefault(r["tx_hash"], set()).add(r["occurred_at"])
    assert all(len(stamps) == 1 for stamps in by_hash.values())
    assert len(by_hash) < len(rows) * 0.8
    keys = [(r["wallet_id"], r["tx_hash"], r["type"], r["asset_symbol"]) for r in rows]
    assert len(keys) == len(set(keys))  # the unique constraint on legs holds


def test_sizes_outside_the_range_are_refused() -> None:
    for size in (0, 99, 1_000_001):
        with pytest.raises(ValueError, match="between 100 and 1000000"):
            next(seed.transactions(size))
    assert len(list(seed.transactions(100))) == 100
    assert next(seed.transactions(1_000_000))["id"] == 1  # the largest size is allowed


# ---- the seeded database, on every backend ----------------------------------------------------

def test_database_holds_exactly_the_generated_rows(engine) -> None:  # type: ignore[no-untyped-def]
    transactions, wallets, contacts = _database_rows(engine)
    assert transactions == SEED_ROWS  # every column: exact Decimal amounts, µs timestamps
    assert all(type(r["amount"]) is Decimal and r["occurred_at"].tzinfo == dt.timezone.utc for r in transactions)
    reference = seed.reference_data()
    assert wallets == reference.wallets
    assert contacts == reference.contacts


def test_reseeding_replaces_every_row(engine, backend) -> None:  # type: ignore[no-untyped-def]
    with engine.begin() as connection:
        connection.execute(Transaction.__table__.update().where(Transaction.__table__.c.id == 1).values(label="edited", version=2))
    seed.seed(engine, 120, seed=7)
    transactions, wallets, _contacts = _database_rows(engine)
    assert transactions == list(seed.transactions(120, seed=7))
    assert wallets == seed.reference_data(7).wallets
    # The next row inserted without an id does not collide with the seeded ids (PostgreSQL's
    # sequences are moved past them).
    with engine.begin() as connection:
        new_id = connection.execute(
            insert(Transaction).returning(Transaction.id),
            {"tx_hash": "0xnew", "wallet_id": 1, "type": "in", "asset_symbol": "ETH", "amount": Decimal(1),
             "occurred_at": seed.END, "version": 1},
        ).scalar_one()
    assert new_id > 120


def test_seed_with_a_bad_size_changes_nothing(engine) -> None:  # type: ignore[no-untyped-def]
    before = snapshot(engine)
    for size in (99, 1_000_001):
        with pytest.raises(ValueError):
            seed.seed(engine, size)
        assert snapshot(engine) == before


def test_the_schema_refuses_what_the_app_never_writes(engine, backend) -> None:  # type: ignore[no-untyped-def]
    """An empty label is NULL (the model turns '' into None; the database refuses ''),
    versions start at 1 and a type is one of in/out/swap/fee."""
    assert Transaction(label="").label is None
    row = {"tx_hash": "0xcheck", "wallet_id": 1, "type": "in", "asset_symbol": "ETH", "amount": Decimal(1),
           "occurred_at": seed.END, "version": 1, "label": "ok"}
    # PyMySQL reports MariaDB's failed CHECK (error 4025) as an OperationalError, not an
    # IntegrityError: the refusal is what counts here.
    for bad in ({"label": ""}, {"version": 0}, {"type": "gift"}, {"wallet_id": 999}):
        with pytest.raises((IntegrityError, OperationalError)) as refused:
            with engine.begin() as connection:
                connection.execute(insert(Transaction), {**row, **bad})
        if isinstance(refused.value, OperationalError):
            assert backend == "mariadb" and refused.value.orig.args[0] == 4025, refused.value
    with engine.begin() as connection:  # the same row without the fault is accepted
        connection.execute(insert(Transaction), row)


# ---- the schema is made by the CLI, never at import -------------------------------------------

def _run(args: list[str], database: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LAB_")}
    env["LAB_DATABASE_URL"] = f"sqlite:///{database}"
    return subprocess.run(args, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=60)


def _tables(database: Path) -> set[str]:
    if not database.exists():
        return set()
    with sqlite3.connect(database) as connection:
        return {name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_importing_and_creating_the_app_makes_no_schema(tmp_path: Path) -> None:
    database = tmp_path / "empty.sqlite3"
    result = _run([sys.executable, "-c", "import fixed.app as m; app = m.create_app(); print(app.config['SQLALCHEMY_DATABASE_URI'])"], database)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"sqlite:///{database}"  # it really used this database...
    assert _tables(database) == set()  # ...and made nothing in it

    # In this process too: create_app on an empty file creates no table.
    from fixed.app import create_app

    other = tmp_path / "other.sqlite3"
    create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{other}", "TESTING": True})
    assert _tables(other) == set()


def test_cli_init_db_and_seed(tmp_path: Path) -> None:
    database = tmp_path / "cli.sqlite3"
    flask = [sys.executable, "-m", "flask", "--app", "fixed.app"]
    for _ in range(2):  # init-db is idempotent
        result = _run(flask + ["init-db"], database)
        assert result.returncode == 0, result.stderr
        assert "schema ready" in result.stdout
    assert {"wallets", "contacts", "transactions"} <= _tables(database)

    result = _run(flask + ["seed", "--size", "150"], database)
    assert result.returncode == 0, result.stderr
    assert "seeded 150 transactions (seed 42)" in result.stdout
    engine = create_engine(f"sqlite:///{database}")
    try:
        transactions, _wallets, _contacts = _database_rows(engine)
        assert transactions == list(seed.transactions(150))
        result = _run(flask + ["seed", "--size", "99"], database)
        assert result.returncode == 2 and "Invalid value for '--size'" in result.stderr
        assert "Traceback" not in result.stderr
        assert _database_rows(engine)[0] == transactions  # refused before touching the data
    finally:
        engine.dispose()
