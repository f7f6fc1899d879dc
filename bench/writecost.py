"""What the list page's indexes cost writers: `python -m bench.writecost --db postgresql`.

On the benchmark's data set, inside transactions that are always rolled back (PostgreSQL and
SQLite have transactional DDL; MariaDB does not, so it is not offered), it times
- inserting 20,000 new rows (copies of existing ones under new ids and hashes),
- relabelling 20,000 rows (an indexed column: every index holding `label` changes),
with the index set of lab/models.py, without the trigram index, and with the four covering
indexes replaced by narrow (column, occurred_at, id) ones; and it prints each index's size.
lab/INDEXES.md shows its figures (bench/indexes.py measures them). Each figure is the best of `--repeat` runs. Afterwards the
indexes are rebuilt and the table vacuumed (rolled-back writes leave dead row versions and
index entries behind on PostgreSQL).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

from sqlalchemy import Connection, text

from bench import dataset
from lab.engine import backend_of
from lab.models import FILTER_COLUMNS

ROWS = 20_000
COVERING = {"ix_transactions_newest": (), "ix_transactions_wallet_newest": ("wallet_id",),
            "ix_transactions_asset_newest": ("asset_symbol",), "ix_transactions_label_newest": ("label",)}


def _insert(connection: Connection, rows: int = ROWS) -> None:
    columns = "tx_hash, wallet_id, type, asset_symbol, amount, occurred_at, label, contact_id, version"
    connection.execute(text(
        f"INSERT INTO transactions (id, {columns}) SELECT id + 5000000, tx_hash || 'copy', "
        f"{columns.split(', ', 1)[1]} FROM transactions WHERE id <= {rows}"))


def _relabel(connection: Connection, rows: int = ROWS) -> None:
    connection.execute(text(
        f"UPDATE transactions SET label = CASE WHEN label IS NULL THEN 'relabelled' ELSE NULL END WHERE id <= {rows}"))


def _without_trigram(connection: Connection) -> None:
    connection.execute(text("DROP INDEX IF EXISTS ix_transactions_label_lower_trgm"))


def _narrow(connection: Connection) -> None:
    for name, leading in COVERING.items():
        connection.execute(text(f"DROP INDEX {name}"))
        connection.execute(text(f"CREATE INDEX {name} ON transactions ({', '.join((*leading, 'occurred_at', 'id'))})"))


def best_of(engine_url: str, prepare: Callable[[Connection], None], work: Callable[[Connection], None],
            repeat: int) -> float:
    engine = dataset.make_engine(engine_url, app_timeouts=False)
    try:
        times = []
        for _ in range(repeat):
            with engine.connect() as connection:
                transaction = connection.begin()
                try:
                    prepare(connection)
                    started = time.perf_counter()
                    work(connection)
                    times.append(time.perf_counter() - started)
                finally:
                    transaction.rollback()
        return min(times)
    finally:
        engine.dispose()


def sizes(engine_url: str) -> list[tuple[str, str]]:
    engine = dataset.make_engine(engine_url, app_timeouts=False)
    try:
        with engine.connect() as connection:
            if engine.dialect.name == "postgresql":
                return [tuple(row) for row in connection.execute(text(  # type: ignore[misc]
                    "SELECT c.relname, pg_size_pretty(pg_relation_size(c.oid)) FROM pg_class c "
                    "WHERE c.relname LIKE 'transactions%' OR c.relname LIKE 'ix_transactions%' "
                    "OR c.relname = 'uq_transactions_leg' ORDER BY c.relname"))]
            return [tuple(row) for row in connection.execute(text(  # type: ignore[misc]
                "SELECT name, printf('%.0f MB', sum(pgsize) / 1048576.0) FROM dbstat "
                "WHERE name LIKE '%transactions%' GROUP BY name ORDER BY name"))]
    finally:
        engine.dispose()


VARIANTS: dict[str, Callable[[Connection], None]] = {
    "lab/models.py": lambda connection: None, "without the trigram index": _without_trigram,
    "narrow instead of covering": _narrow}


def measure(url: str, repeat: int = 3, rows: int = ROWS) -> dict[str, Any]:
    """Seconds to insert and to relabel `rows` rows under each index variant (best of
    `repeat`), then the data set restored as it was made."""
    figures: dict[str, Any] = {"rows": rows, "variants": {}}
    for label, prepare in VARIANTS.items():
        if backend_of(url) == "sqlite" and label == "without the trigram index":
            continue
        figures["variants"][label] = {
            "insert_s": round(best_of(url, prepare, lambda c: _insert(c, rows), repeat), 3),
            "relabel_s": round(best_of(url, prepare, lambda c: _relabel(c, rows), repeat), 3)}
    # A rolled-back insert or update still leaves dead row versions and index entries on
    # PostgreSQL: they clear the visibility map (index-only scans would visit the table again)
    # and bloat the indexes. Rebuild and vacuum, so the benchmark finds the data set as made.
    engine = dataset.make_engine(url, app_timeouts=False)
    try:
        if engine.dialect.name == "postgresql":
            with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
                connection.execute(text("SET maintenance_work_mem = '256MB'"))
                connection.execute(text("REINDEX TABLE transactions"))
        dataset.analyze(engine)
    finally:
        engine.dispose()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("postgresql", "sqlite"), required=True)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    url = dataset.bench_url(args.db)
    print(f"covering columns: {', '.join(FILTER_COLUMNS)}")
    for name, size in sizes(url):
        print(f"  {name:<34} {size}")
    figures = measure(url, args.repeat)
    for label, times in figures["variants"].items():
        print(f"{label:<28} insert {ROWS:,} rows {times['insert_s']:6.2f} s   relabel {ROWS:,} rows {times['relabel_s']:6.2f} s")


if __name__ == "__main__":
    main()
