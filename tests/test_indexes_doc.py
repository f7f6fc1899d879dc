"""lab/INDEXES.md justifies every index the schema creates: a row in its table of indexes, and
a plan from a real EXPLAIN that uses the index (quoted in a code block or inline). An index
added to lab/models.py without a measured reason fails here."""

from __future__ import annotations

import re
from pathlib import Path

from lab.models import Base

INDEXES_MD = Path(__file__).resolve().parent.parent / "lab" / "INDEXES.md"
# How each backend names the index a plan uses (PostgreSQL, MariaDB, SQLite).
PLAN_USES = r"(?:using|Scan on|key=|INDEX) {name}\b"


def _schema_indexes() -> set[str]:
    names = set()
    for table in Base.metadata.tables.values():
        names |= {index.name for index in table.indexes if index.name}
        names |= {c.name for c in table.constraints if c.name and c.name.startswith("uq_")}
    return names


def test_every_index_of_the_schema_has_a_row_and_a_measured_plan() -> None:
    text = INDEXES_MD.read_text()
    table = text[text.index("## The indexes"):].split("\n\n")[1]
    listed = set(re.findall(r"^\| `(\w+)`", table, flags=re.MULTILINE))
    indexes = _schema_indexes()
    assert {"ix_transactions_newest", "ix_transactions_label_newest", "ix_transactions_label_trgm"} <= indexes
    secondary = {name for name in indexes if name.startswith("ix_")}
    assert secondary <= listed, f"no row in the table of lab/INDEXES.md: {sorted(secondary - listed)}"
    assert listed <= indexes, f"rows for indexes the schema no longer has: {sorted(listed - indexes)}"
    unplanned = [name for name in sorted(secondary) if not re.search(PLAN_USES.format(name=name), text)]
    assert not unplanned, f"no quoted plan uses these indexes: {unplanned}"
    # Unique constraints are there for integrity (one row per leg), not for the page: named
    # with what they cost.
    for name in indexes - secondary:
        assert f"`{name}`" in text or re.search(rf"\b{name}\b", text), name


def test_the_plans_name_the_servers_they_ran_on() -> None:
    head = " ".join(INDEXES_MD.read_text().split("\n## ")[0].split())
    for server in ("PostgreSQL 1", "MariaDB 1", "SQLite 3."):
        assert re.search(re.escape(server) + r"[\d.]*", head), server
