"""lab/INDEXES.md, rendered from what bench/indexes.py measured (lab/INDEXES.measured.json)
and the prose of bench/indexes_template.md. Nothing in the document is typed by hand: plans,
times, sizes and versions come from the JSON, and which index each case uses is read off its
plans. The template refers to measurements with placeholders:

    {{plan postgresql "no filter | page 10000 | page" Index}}   plan lines (optionally those matching a regex)
    {{ms mariadb "wallets, semi-join"}}                         median time of the statement
    {{line sqlite "label exact | page 1 | page" SEARCH}}       the first plan line matching a regex, inline
    {{removed postgresql "keyset, OR"}}                         the rows its plan removed by filter
    {{versions}} {{size}} {{measured}} {{index_table}} {{uses_table}} {{sizes}} {{writecost}} {{load}}

A placeholder whose measurement is missing is an error, so the prose cannot outlive the plans.
"""

from __future__ import annotations

import re
import shlex
from typing import Any, Callable

from lab.engine import REPO_ROOT, STATEMENT_TIMEOUT_MS

INDEXES_MD = REPO_ROOT / "lab" / "INDEXES.md"
TEMPLATE = REPO_ROOT / "bench" / "indexes_template.md"
BACKENDS = ("postgresql", "mariadb", "sqlite")
NAMES = {"postgresql": "PostgreSQL", "mariadb": "MariaDB", "sqlite": "SQLite"}
# Why each secondary index exists; render() fails for an index of the schema missing here.
SERVES = {
    "ix_transactions_newest": "the whole list, dates, broad filters, any combination without a better index",
    "ix_transactions_wallet_newest": "one wallet, and wallet with anything; the counts of wallets "
                                     "(MariaDB counts them from `uq_transactions_leg`)",
    "ix_transactions_asset_newest": "one asset, and asset with anything",
    "ix_transactions_label_newest": "label exact, unlabelled, either with anything; \"label contains\": "
                                    "its distinct labels, then the rows of those labels",
    "ix_transactions_contact_newest": "one contact; the contacts foreign key (MariaDB needs an index for it)",
    "ix_transactions_type_newest": "the count of a type filter, and its page where the planner prefers it",
    "ix_transactions_label_lower_trgm": "\"label contains\" on a table of more than 1,000 distinct labels "
                                        "(`lower(label) LIKE`), PostgreSQL only",
}
Measured = dict[str, Any]


class MissingMeasurement(KeyError):
    pass


def plan_record(measured: Measured, backend: str, key: str) -> dict[str, Any]:
    if backend not in measured:
        raise MissingMeasurement(f"{backend} was not measured")
    for group in ("cases", "alternatives", "without"):
        if key in measured[backend].get(group, {}):
            return measured[backend][group][key]
    raise MissingMeasurement(f"{backend}: no measured statement {key!r}")


def indexes_used(backend: str, lines: list[str]) -> list[str]:
    """The transactions indexes a plan reads, in plan order ("table" for a scan of the table)."""
    found: list[str] = []
    for line in lines:
        if backend == "postgresql":
            names = re.findall(r"(?:using|Scan on) (ix_\w+|uq_\w+)", line)
            if re.search(r"using transactions_pkey\b", line):
                names.append("primary key")
            if re.search(r"Seq Scan on transactions\b", line):
                names.append("table")
        elif backend == "mariadb":
            names = []
            if re.search(r"table=transactions\b", line):
                key = re.search(r"\bkey=(\w+)", line)
                kind = re.search(r"\btype=(\w+)", line)
                if key:
                    names.append("primary key" if key.group(1) == "PRIMARY" else key.group(1))
                elif kind and kind.group(1) == "ALL":
                    names.append("table")
        else:
            names = re.findall(r"transactions(?:_\d+)? USING (?:COVERING )?INDEX (\w+)", line)
            if re.search(r"transactions(?:_\d+)? USING INTEGER PRIMARY KEY", line):
                names.append("primary key")
            if re.search(r"SCAN transactions(?:_\d+)?$", line):
                names.append("table")
        for name in map(_index_name, names):
            if name not in found:
                found.append(name)
    # A page's outer query reads the rows of its ids by primary key: named only when nothing
    # else of the table is read.
    secondary = [name for name in found if name != "primary key"]
    return secondary or found


def _ms(record: dict[str, Any]) -> str:
    if record["error"]:
        if re.search(r"max_statement_time|statement timeout", record["error"]):
            return f"over {STATEMENT_TIMEOUT_MS / 1000:g} s (stopped by the app's statement time limit)"
        return f"failed ({record['error']})"
    value = record["ms"]
    return f"{value:,.2f} ms" if value < 100 else f"{value:,.0f} ms"


def _mb(size: int) -> str:
    return f"{size / 1048576:,.0f} MB"


def _removed(record: dict[str, Any]) -> str:
    total = sum(int(n) for line in record["lines"] for n in re.findall(r"Rows Removed by Filter: (\d+)", line))
    return f"{total:,}"


def _code(lines: list[str]) -> str:
    return "\n".join("    " + line for line in lines)


def _plan(measured: Measured, backend: str, key: str, pattern: str | None = None) -> str:
    """The plan's lines that match `pattern` (all without one). On PostgreSQL a matching plan
    node comes with its detail lines (Index Cond, Filter, Rows Removed, Heap Fetches)."""
    record = plan_record(measured, backend, key)
    lines: list[str] = []
    node_depth: int | None = None
    for line in record["lines"]:
        depth = len(line) - len(line.lstrip())
        is_detail = backend == "postgresql" and "->" not in line and not line.startswith(("Execution", "Planning"))
        if node_depth is not None and is_detail and depth > node_depth:
            lines.append(line)
            continue
        node_depth = None
        if pattern is None or re.search(pattern, line):
            lines.append(line)
            node_depth = depth
    if not lines:
        raise MissingMeasurement(f"{backend} {key!r}: no plan line matches {pattern!r}")
    # Dedent to the shallowest node; PostgreSQL's top-level "Execution Time" joins it there.
    nodes = [line for line in lines if not line.startswith(("Execution", "Planning"))] or lines
    indent = min(len(line) - len(line.lstrip()) for line in nodes)
    return _code([line[indent:] if line[:indent].isspace() else line for line in lines])


def _line(measured: Measured, backend: str, key: str, pattern: str) -> str:
    record = plan_record(measured, backend, key)
    for line in record["lines"]:
        if re.search(pattern, line):
            return f"`{line.strip()}`"
    raise MissingMeasurement(f"{backend} {key!r}: no plan line matches {pattern!r}")


def versions(measured: Measured) -> str:
    names = [measured[b]["version"] for b in BACKENDS if b in measured]
    return ", ".join(names[:-1]) + " and " + names[-1] if len(names) > 1 else "".join(names)


def used_by(measured: Measured) -> dict[str, dict[str, list[str]]]:
    """index -> backend -> the cases (with page and statement) whose measured plan reads it."""
    uses: dict[str, dict[str, list[str]]] = {}
    for backend in BACKENDS:
        for key, record in measured.get(backend, {}).get("cases", {}).items():
            for name in indexes_used(backend, record["lines"]):
                uses.setdefault(name, {}).setdefault(backend, []).append(key)
        for key, record in measured.get(backend, {}).get("alternatives", {}).items():
            if key.startswith("contains by LIKE"):  # the fallback the app takes beyond 1,000 labels
                for name in indexes_used(backend, record["lines"]):
                    uses.setdefault(name, {}).setdefault(backend, []).append(key)
    return uses


def index_table(measured: Measured) -> str:
    schema: dict[str, str] = {}
    for backend in BACKENDS:
        schema.update(measured.get(backend, {}).get("schema", {}))
    uses = used_by(measured)
    rows = ["| index | columns | serves | measured plans that read it (of the cases below) | size PostgreSQL / SQLite |",
            "|---|---|---|---|---|"]
    for name in sorted(n for n in schema if n.startswith("ix_")):
        if name not in SERVES:
            raise MissingMeasurement(f"{name}: say in bench/indexes_doc.py SERVES what it serves")
        readers = []
        for backend in BACKENDS:
            keys = uses.get(name, {}).get(backend, [])
            if keys:
                readers.append(f"{NAMES[backend]} {len(keys)}")
        size = " / ".join(_mb(measured[b]["sizes"][name]) if name in measured.get(b, {}).get("sizes", {}) else "-"
                          for b in ("postgresql", "sqlite"))
        rows.append(f"| `{name}` | `{schema[name]}` | {SERVES[name]} | {', '.join(readers) or 'none'} | {size} |")
    return "\n".join(rows)


def uses_table(measured: Measured) -> str:
    present = [b for b in BACKENDS if b in measured]
    head = "| case | page | " + " | ".join(f"{NAMES[b]} page | {NAMES[b]} count" for b in present) + " |"
    rows = [head, "|---|---|" + "---|---|" * len(present)]
    keys = list(measured[present[0]]["cases"])
    seen: set[tuple[str, str]] = set()
    for key in keys:
        case, depth, _role = key.split(" | ")
        if (case, depth) in seen:
            continue
        seen.add((case, depth))
        cells = []
        for backend in present:
            for role in ("page", "count"):
                record = measured[backend]["cases"].get(f"{case} | {depth} | {role}")
                if record is None:
                    cells.append("none sent")
                    continue
                used = " + ".join(sorted(set(indexes_used(backend, record["lines"])))) or "-"
                short = used.replace("ix_transactions_", "")
                cells.append(f"{short}, {_ms(record)}")
        rows.append(f"| {case} | {depth.removeprefix('page ')} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def sizes(measured: Measured) -> str:
    parts = []
    for backend in BACKENDS:
        if backend not in measured:
            continue
        figures = measured[backend]["sizes"]
        listed = ", ".join((f"`{_index_name(name)}`" if name.startswith(("ix_", "uq_", "sqlite_", "transactions_"))
                            else name) + f" {_mb(size)}"
                           for name, size in sorted(figures.items()) if name != "transactions")
        parts.append(f"{NAMES[backend]}: table {_mb(figures['transactions'])}; {listed}.")
    return "\n".join(f"- {part}" for part in parts)


def _index_name(name: str) -> str:
    """SQLite names the index of the table's only unique constraint itself."""
    return "uq_transactions_leg" if name.startswith("sqlite_autoindex_transactions") else name


def writecost(measured: Measured) -> str:
    rows = ["| | insert | relabel |", "|---|---|---|"]
    for backend in ("postgresql", "sqlite"):
        figures = measured.get(backend, {}).get("writecost")
        if figures is None:
            raise MissingMeasurement(f"{backend}: no write cost measured")
        for variant, times in figures["variants"].items():
            rows.append(f"| {NAMES[backend]}, {variant} ({figures['rows']:,} rows) | {times['insert_s']:.2f} s "
                        f"| {times['relabel_s']:.2f} s |")
    return "\n".join(rows)


def load(measured: Measured) -> str:
    return ", ".join(f"{NAMES[b]} {measured[b]['load']['seconds']:.0f} s (peak {measured[b]['load']['peak_mb']:.0f} MB "
                     f"in the loading process)" for b in BACKENDS if b in measured)


def measured_at(measured: Measured) -> str:
    return "; ".join(f"{NAMES[b]} {measured[b]['measured_at']} ({measured[b]['seconds']:.0f} s)"
                     for b in BACKENDS if b in measured)


def _sizes_of_data(measured: Measured) -> str:
    return f"{measured[next(b for b in BACKENDS if b in measured)]['size']:,}"


PLACEHOLDERS: dict[str, Callable[..., str]] = {
    "plan": _plan,
    "line": _line,
    "ms": lambda measured, backend, key: _ms(plan_record(measured, backend, key)),
    "removed": lambda measured, backend, key: _removed(plan_record(measured, backend, key)),
    "versions": versions,
    "size": _sizes_of_data,
    "measured": measured_at,
    "index_table": index_table,
    "uses_table": uses_table,
    "sizes": sizes,
    "writecost": writecost,
    "load": load,
}


def render(measured: Measured, template: str | None = None) -> str:
    text = TEMPLATE.read_text() if template is None else template

    def fill(match: re.Match[str]) -> str:
        kind, *args = shlex.split(match.group(1))
        if kind not in PLACEHOLDERS:
            raise MissingMeasurement(f"unknown placeholder {{{{{match.group(1)}}}}}")
        return PLACEHOLDERS[kind](measured, *args)

    return re.sub(r"\{\{(.+?)\}\}", fill, text)
