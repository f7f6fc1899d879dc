"""lab/INDEXES.md is generated from measured plans, and every index the schema creates is
justified there by a plan that reads it.

- The committed document is exactly what bench/indexes_doc.py renders from the committed
  measurements (lab/INDEXES.measured.json): nothing in it is typed.
- The measurements are of the current schema: an index added, dropped or changed in
  lab/models.py fails here until `make indexes` measures again.
- Each secondary index is read by at least one measured plan of a case the page sends.
- The measuring code itself runs, on a small SQLite data set, and what it records is what the
  renderer reads (plans that name indexes, every rejected alternative, the narrow-index
  counts, the write cost).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from bench import indexes, indexes_doc
from lab.models import Base

MEASURED = json.loads(indexes.MEASURED_JSON.read_text())


def test_the_committed_document_is_rendered_from_the_measurements() -> None:
    assert indexes_doc.INDEXES_MD.read_text() == indexes_doc.render(MEASURED), (
        "lab/INDEXES.md differs from what its template and measurements render: "
        "run `python -m bench.indexes --render-only` (or `make indexes` to measure again)")
    assert "{{" not in indexes_doc.INDEXES_MD.read_text()


@pytest.mark.parametrize("server", indexes_doc.BACKENDS)
def test_the_measurements_are_of_the_current_schema(server: str) -> None:
    assert MEASURED[server]["schema"] == indexes.schema_of(server), (
        f"lab/models.py's indexes on {server} changed since they were measured: run `make indexes`")
    assert MEASURED[server]["size"] == 1_000_000


def test_every_secondary_index_is_read_by_a_measured_plan() -> None:
    uses = indexes_doc.used_by(MEASURED)
    for backend in indexes_doc.BACKENDS:
        for name in indexes.schema_of(backend):
            if name.startswith("ix_"):
                assert uses.get(name, {}), f"{name}: no measured plan reads it, on any backend"
    table = MEASURED["postgresql"]["schema"]
    assert {"ix_transactions_newest", "ix_transactions_label_newest", "ix_transactions_label_lower_trgm"} <= set(table)
    # The schema's own list, independent of the measuring code.
    declared = {index.name for index in Base.metadata.tables["transactions"].indexes}
    assert declared == {name for name in table if name.startswith("ix_")}


def test_the_document_names_the_servers_it_ran_on() -> None:
    head = " ".join(indexes_doc.INDEXES_MD.read_text().split("\n## ")[0].split())
    for server in ("PostgreSQL 1", "MariaDB 1", "SQLite 3."):
        assert re.search(re.escape(server) + r"[\d.]*", head), server


def test_reading_indexes_off_plans() -> None:
    assert indexes_doc.indexes_used("postgresql", [
        "->  Index Only Scan Backward using ix_transactions_newest on transactions transactions_1  (cost=...)",
        "->  Index Scan using transactions_pkey on transactions  (cost=...)"]) == ["ix_transactions_newest"]
    assert indexes_doc.indexes_used("postgresql", ["->  Parallel Seq Scan on transactions  (cost=...)"]) == ["table"]
    assert indexes_doc.indexes_used("mariadb", [
        "id=1 | select_type=PRIMARY | table=<derived2> | type=ALL",
        "id=1 | select_type=PRIMARY | table=transactions | type=eq_ref | key=PRIMARY",
        "id=2 | select_type=DERIVED | table=transactions | type=range | key=ix_transactions_type_newest"]) == [
        "ix_transactions_type_newest"]
    assert indexes_doc.indexes_used("sqlite", [
        "SEARCH transactions USING COVERING INDEX ix_transactions_label_newest (label=? AND occurred_at<?)",
        "SEARCH transactions USING INTEGER PRIMARY KEY (rowid=?)"]) == ["ix_transactions_label_newest"]
    assert indexes_doc.indexes_used("sqlite", ["SCAN transactions"]) == ["table"]


def test_a_placeholder_without_its_measurement_is_an_error() -> None:
    with pytest.raises(indexes_doc.MissingMeasurement):
        indexes_doc.render(MEASURED, '{{ms postgresql "no such statement"}}')
    with pytest.raises(indexes_doc.MissingMeasurement):
        indexes_doc.render(MEASURED, '{{line sqlite "no filter | page 1 | page" "no line says this"}}')


def test_measuring_a_small_sqlite_data_set(tmp_path: Path) -> None:
    measured = indexes.measure("sqlite", size=20_000, log=lambda _line: None, sqlite_dir=tmp_path)
    assert measured["schema"] == indexes.schema_of("sqlite")
    for name, record in {**measured["cases"], **measured["alternatives"], **measured["without"]}.items():
        assert record["error"] is None and record["lines"] and record["ms"] > 0, name
    assert set(measured["alternatives"]) == set(MEASURED["sqlite"]["alternatives"])
    assert set(measured["without"]) == set(MEASURED["sqlite"]["without"])
    assert {key.rsplit(" | ", 1)[0] for key in measured["cases"]} >= {"no filter | page 1", "label exact | page 1"}
    used = indexes_doc.used_by({"sqlite": measured})
    assert "ix_transactions_newest" in used and "ix_transactions_label_newest" in used
    assert set(measured["writecost"]["variants"]) == {"lab/models.py", "narrow instead of covering"}
    assert measured["sizes"]["transactions"] > 0 and measured["version"].startswith("SQLite 3.")
    # What the renderer makes of it: every case of the measurement gets its row.
    table = indexes_doc.uses_table({"sqlite": measured})
    assert table.count("\n| ") == len({key.rsplit(" | ", 1)[0] for key in measured["cases"]})
