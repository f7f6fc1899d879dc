"""The benchmark's data set: 1,000,000 deterministic transactions per backend, made once.

The rows are exactly `lab.seed.transactions(size, seed)` (the distribution stated in
lab/seed.py), in a database of their own (`lab_bench`, a file under var/bench/ for SQLite),
so a benchmark never disturbs the app's or the tests' data and `make clean` drops it.

Reuse: a marker table, written last, names the size, the seed and a fingerprint of the
generator and of the table definitions. A database whose marker matches and whose row count is
the size is reused; anything else (no database, no marker, an interrupted load, another schema)
is re-created from scratch. Indexes are not part of the fingerprint: they follow lab/models.py
on every run (missing ones are built, stale ones dropped), so changing an index never costs a
reseed.

Loading is a bulk load, not `lab.seed.seed` (which inserts through SQLAlchemy in batches and
keeps every index up to date row by row: measured here, 26 s for 200,000 rows on PostgreSQL,
so over two minutes for 1M):
- the secondary indexes are dropped first and built once at the end (a sort instead of a
  million random B-tree insertions), except on MariaDB the one its `contact_id` foreign key
  needs;
- PostgreSQL receives the rows by COPY, MariaDB and SQLite by the driver's executemany
  (PyMySQL turns it into multi-row INSERTs);
- every value goes through the column types' own bind processors, so the stored values are
  the ones `lab.seed.seed` would store.
The load runs in a child process (`python -m bench.dataset`), which reports its wall time and
its peak resident memory (getrusage maxrss), both stored in the marker.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import resource
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from sqlalchemy import (
    Column, Connection, Engine, Float, Index, Integer, MetaData, String, Table, UniqueConstraint, create_engine, func,
    insert, inspect, select, text,
)
from sqlalchemy.exc import OperationalError, ProgrammingError
from sqlalchemy.schema import CreateTable

from lab import databases, seed
from lab.engine import REPO_ROOT, backend_of, configure_engine, engine_options
from lab.models import TRIGRAM_EXTENSION, Base, Contact, Transaction, Wallet

BENCH_DATABASE = "lab_bench"
SQLITE_DIR = REPO_ROOT / "var" / "bench"
COPY_BATCH = 10_000

_marker_metadata = MetaData()
MARKER = Table(
    "lab_bench_dataset",
    _marker_metadata,
    Column("size", Integer, nullable=False),
    Column("seed", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("seconds", Float, nullable=False),
    Column("peak_mb", Float, nullable=False),
    Column("seeded_at", String(40), nullable=False),
)


@dataclass
class Dataset:
    backend: str
    url: str
    size: int
    seed: int
    reused: bool  # True: found in place, no seeding in this run
    seed_seconds: float  # of the load that made it (this run's or an earlier one's)
    seed_peak_mb: float
    seeded_at: str
    index_changes: list[str]


def database_name(size: int) -> str:
    """`lab_bench` for the full 1M rows; another size gets a database of its own
    (`lab_bench_2000`), so a quick run at a small size never replaces the big data set."""
    return BENCH_DATABASE if size == seed.MAX_SIZE else f"{BENCH_DATABASE}_{size}"


def bench_url(backend: str, name: str = BENCH_DATABASE, sqlite_dir: Path = SQLITE_DIR) -> str:
    """Where the benchmark's data set lives on this backend (it may not exist yet)."""
    if backend == "sqlite":
        return f"sqlite:///{sqlite_dir / (name + '.sqlite3')}"
    return databases.server_url(backend).set(database=name).render_as_string(hide_password=False)


def make_engine(url: str, app_timeouts: bool = True) -> Engine:
    """An engine configured exactly as the app configures its own; without `app_timeouts`,
    for the benchmark's own set-up statements (a bulk load, an OFFSET of 500,000 rows to find
    a deep cursor), which may run longer than the app allows a request."""
    options = engine_options(url)
    if not app_timeouts and backend_of(url) != "sqlite":
        options = {**options, "connect_args": {k: v for k, v in options["connect_args"].items()
                                               if k not in ("options", "init_command")}}
    return configure_engine(create_engine(url, **options))


def fingerprint(backend_url: str, size: int, seed_value: int) -> str:
    """What the rows depend on: size, seed, the generator's output and the table definitions."""
    dialect = create_engine(backend_url).dialect  # no connection is made
    digest = hashlib.sha256(f"{size}:{seed_value}".encode())
    for row in seed.transactions(min(size, 2_000), seed_value):
        digest.update(repr(sorted(row.items())).encode())
    digest.update(repr(seed.reference_data(seed_value)).encode())
    for model in (Wallet, Contact, Transaction):
        digest.update(str(CreateTable(model.__table__).compile(dialect=dialect)).encode())
    return digest.hexdigest()


def ensure(backend: str, size: int, seed_value: int = seed.DEFAULT_SEED, log: Any = print,
           name: str | None = None, sqlite_dir: Path = SQLITE_DIR) -> Dataset:
    """The data set on `backend`, reused when it is already there, else made in a child process."""
    name = name or database_name(size)
    url = bench_url(backend, name, sqlite_dir)
    expected = fingerprint(url, size, seed_value)
    marker = _read_marker(url, size)
    if marker is None or marker["fingerprint"] != expected or marker["seed"] != seed_value:
        log(f"{backend}: no {size:,}-row data set in {name}: seeding it (once; later runs reuse it)")
        sqlite_dir.mkdir(parents=True, exist_ok=True)
        url = databases.private_database(backend, name, sqlite_dir)
        _run_loader(url, size, seed_value, expected)
        marker = _read_marker(url, size)
        if marker is None:
            raise RuntimeError(f"{backend}: the load finished but left no valid marker in {name}")
        reused = False
    else:
        reused = True
    engine = make_engine(url)
    try:
        changes = sync_indexes(engine)
        if changes:
            log(f"{backend}: indexes brought in line with lab/models.py: {', '.join(changes)}")
            analyze(engine)
    finally:
        engine.dispose()
    return Dataset(backend, url, size, seed_value, reused, marker["seconds"], marker["peak_mb"],
                   marker["seeded_at"], changes)


def _read_marker(url: str, size: int) -> dict[str, Any] | None:
    """The marker row when the database exists, holds it, and holds `size` transactions."""
    if backend_of(url) == "sqlite" and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            row = connection.execute(select(MARKER)).mappings().first()
            if row is None or row["size"] != size:
                return None
            count = connection.execute(select(func.count()).select_from(Transaction.__table__)).scalar_one()
            return dict(row) if count == size else None
    except (OperationalError, ProgrammingError):  # no database or no marker table yet
        return None
    finally:
        engine.dispose()


def _run_loader(url: str, size: int, seed_value: int, expected: str) -> None:
    command = [sys.executable, "-m", "bench.dataset", "--url", url, "--size", str(size),
               "--seed", str(seed_value), "--fingerprint", expected]
    subprocess.run(command, cwd=REPO_ROOT, check=True)


# ---- the load (runs in the child process) --------------------------------------------------------

def load(url: str, size: int, seed_value: int, expected: str) -> dict[str, float]:
    started = time.perf_counter()
    engine = make_engine(url)
    backend = backend_of(url)
    try:
        Base.metadata.drop_all(engine)
        _marker_metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        with engine.begin() as connection:
            _no_statement_timeout(connection)
            for name in deferred_indexes(connection):
                _drop_index(connection, name)
            reference = seed.reference_data(seed_value)
            connection.execute(insert(Wallet), reference.wallets)
            connection.execute(insert(Contact), reference.contacts)
            if backend == "postgresql":
                _copy_rows(connection, size, seed_value)
                for name in ("wallets", "contacts", "transactions"):
                    connection.execute(text(
                        f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), (SELECT max(id) FROM {name}))"))
            else:
                _bulk_session(connection)
                _executemany_rows(connection, size, seed_value)
                if connection.dialect.name in ("mysql", "mariadb"):
                    connection.execute(text("SET SESSION unique_checks = 1, foreign_key_checks = 1"))
        loaded = time.perf_counter()
        print(f"  rows loaded in {loaded - started:.1f} s", file=sys.stderr)
        sync_indexes(engine)
        indexed = time.perf_counter()
        print(f"  indexes built in {indexed - loaded:.1f} s", file=sys.stderr)
        analyze(engine)
        seconds = time.perf_counter() - started
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kilobytes
        _marker_metadata.create_all(engine)
        with engine.begin() as connection:
            connection.execute(insert(MARKER), {
                "size": size, "seed": seed_value, "fingerprint": expected, "seconds": seconds, "peak_mb": peak_mb,
                "seeded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            })
        return {"seconds": seconds, "peak_mb": peak_mb, "load_seconds": loaded - started,
                "index_seconds": indexed - loaded}
    finally:
        engine.dispose()


def deferred_indexes(connection: Connection) -> list[str]:
    """Secondary indexes to build after the load. MariaDB refuses to drop the only index that
    starts with a foreign key's column (`contact_id`); `wallet_id` also leads the unique
    constraint on legs, which serves its foreign key meanwhile."""
    indexes = declared_indexes(connection.dialect.name)
    if connection.dialect.name in ("mysql", "mariadb"):
        table = Transaction.__table__
        foreign = {fk.parent.name for fk in table.foreign_keys}
        led_by_unique = {next(iter(c.columns)).name for c in table.constraints if isinstance(c, UniqueConstraint)}
        indexes = [index for index in indexes
                   if next(iter(index.columns)).name not in foreign - led_by_unique]
    return [str(index.name) for index in indexes]


def declared_indexes(dialect_name: str) -> list[Index]:
    """The indexes lab/models.py declares for this dialect (ddl_if honoured)."""
    def applies(index: Index) -> bool:
        condition = index._ddl_if
        if condition is None or condition.dialect is None:
            return True
        dialects = (condition.dialect,) if isinstance(condition.dialect, str) else condition.dialect
        return dialect_name in dialects or (dialect_name == "mariadb" and "mysql" in dialects)
    return sorted((index for index in Transaction.__table__.indexes if applies(index)), key=lambda i: str(i.name))


def _no_statement_timeout(connection: Connection) -> None:
    # The app's guard (lab/engine.py) would cancel a bulk load or an index build.
    if connection.dialect.name == "postgresql":
        connection.execute(text("SET LOCAL statement_timeout = 0"))
        connection.execute(text("SET LOCAL maintenance_work_mem = '256MB'"))
    elif connection.dialect.name in ("mysql", "mariadb"):
        connection.execute(text("SET SESSION max_statement_time = 0"))


def _bulk_session(connection: Connection) -> None:
    # The generator guarantees unique legs and existing wallets and contacts; MariaDB may
    # skip checking them row by row during the load (InnoDB's documented bulk-load settings).
    if connection.dialect.name in ("mysql", "mariadb"):
        connection.execute(text("SET SESSION unique_checks = 0, foreign_key_checks = 0"))


def _processed_rows(connection: Connection, size: int, seed_value: int) -> Iterator[list[Any]]:
    """Generated rows as DBAPI values, converted by the columns' own types."""
    columns = list(Transaction.__table__.columns)
    processors = [column.type._cached_bind_processor(connection.dialect) for column in columns]
    names = [column.name for column in columns]
    for row in seed.transactions(size, seed_value):
        yield [process(row[name]) if process else row[name] for name, process in zip(names, processors)]


def _copy_rows(connection: Connection, size: int, seed_value: int) -> None:
    names = ", ".join(column.name for column in Transaction.__table__.columns)
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor.copy(f"COPY transactions ({names}) FROM STDIN") as copy:
        for values in _processed_rows(connection, size, seed_value):
            copy.write_row(values)
    cursor.close()


def _executemany_rows(connection: Connection, size: int, seed_value: int) -> None:
    columns = list(Transaction.__table__.columns)
    style = "?" if connection.dialect.name == "sqlite" else "%s"
    statement = (f"INSERT INTO transactions ({', '.join(c.name for c in columns)}) "
                 f"VALUES ({', '.join([style] * len(columns))})")
    cursor = connection.connection.driver_connection.cursor()  # type: ignore[union-attr]
    batch: list[list[Any]] = []
    for values in _processed_rows(connection, size, seed_value):
        batch.append(values)
        if len(batch) == COPY_BATCH:
            cursor.executemany(statement, batch)
            batch.clear()
    if batch:
        cursor.executemany(statement, batch)
    cursor.close()


# ---- indexes follow lab/models.py ---------------------------------------------------------------

def sync_indexes(engine: Engine) -> list[str]:
    """Build the indexes lab/models.py declares and drop `ix_transactions_*` ones it no longer does."""
    changes: list[str] = []
    with engine.begin() as connection:
        _no_statement_timeout(connection)
        present = {index["name"]: index["column_names"] for index in inspect(connection).get_indexes("transactions")}
        wanted = {index.name: index for index in declared_indexes(connection.dialect.name)}
        for name, columns in sorted(present.items()):
            declared = wanted.get(name)
            # An expression index (the trigram one) has no plain columns: known by its name.
            if name and name.startswith("ix_transactions_") and (
                    declared is None or (declared.columns and [c.name for c in declared.columns] != columns)):
                _drop_index(connection, name)  # gone from the models, or its columns changed
                del present[name]
                changes.append(f"-{name}")
        missing = [index for name, index in wanted.items() if name not in present]
        if missing and connection.dialect.name == "postgresql":
            connection.execute(TRIGRAM_EXTENSION)  # made with the table; an older data set lacks it
        for index in missing:
            index.create(connection)
            changes.append(f"+{index.name}")
    return changes


def _drop_index(connection: Connection, name: str) -> None:
    on_table = " ON transactions" if connection.dialect.name in ("mysql", "mariadb") else ""
    connection.execute(text(f"DROP INDEX {name}{on_table}"))


def analyze(engine: Engine) -> None:
    """Fresh planner statistics; on PostgreSQL also the visibility map (index-only scans)."""
    backend = backend_of(engine.url)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
        if backend == "postgresql":
            connection.execute(text("SET statement_timeout = 0"))
            connection.execute(text("VACUUM ANALYZE transactions"))
            connection.execute(text("ANALYZE wallets"))
            connection.execute(text("ANALYZE contacts"))
        elif backend == "mariadb":
            connection.execute(text("SET SESSION max_statement_time = 0"))
            for name in ("transactions", "wallets", "contacts"):
                connection.execute(text(f"ANALYZE TABLE {name}")).all()
        else:
            connection.execute(text("ANALYZE"))


def main() -> None:
    parser = argparse.ArgumentParser(description="Bulk-load the benchmark data set (run by `python -m bench`).")
    parser.add_argument("--url", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--seed", type=int, default=seed.DEFAULT_SEED)
    parser.add_argument("--fingerprint", required=True)
    args = parser.parse_args()
    figures = load(args.url, args.size, args.seed, args.fingerprint)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
