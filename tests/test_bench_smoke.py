"""The benchmark's machinery on a tiny SQLite data set: shapes and behaviour, never speed.

`make bench` measures 1,000,000 rows on every backend; this runs the same code on 2,000 rows
with pages 1, 2 and 4 (so a "deep" page and cursors are exercised), a few samples, one
gunicorn worker, in a temporary folder. Timings are not asserted: they only have to exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench import cases, dataset, measure, report
from bench.__main__ import Options, run_backend
from bench.app import create_app
from lab import seed
from lab.models import Transaction

SIZE = 2_000
CASES = ["no filter", "several wallets", "label contains", "label contains, no match", "contact", "date range, one month"]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("bench")
    options = Options(size=SIZE, seed_value=seed.DEFAULT_SEED, budget=measure.Budget(repeat=3, minimum=2, warmup=1),
                      case_names=CASES, http=True, results_dir=folder / "results", sqlite_dir=folder,
                      shallow=(1, 2), deep=4, deep_min_matches=1_000, throughput_seconds=0.5, throughput_rounds=1)
    result = run_backend("sqlite", options)
    return result, folder


def test_the_json_has_every_position_with_its_figures(run: tuple[dict, Path]) -> None:
    result, folder = run
    path = Path(result["path"])
    assert path.parent.parent == folder / "results" / "sqlite" / "bench"
    assert (path.parent.parent / "latest").resolve() == path.parent.resolve()
    stored = json.loads(path.read_text())
    assert stored["schema_version"] == report.SCHEMA_VERSION and stored["size"] == SIZE
    assert stored["server_version"].startswith("SQLite ")
    pages = {(p["case"], p["page"]) for p in stored["positions"]}
    # 2,000 rows: "no filter" reaches the deep page (4); the rare filters stop where they end.
    assert {("no filter", 1), ("no filter", 2), ("no filter", 4)} <= pages
    assert ("contact", 4) not in pages
    assert {p["case"] for p in stored["positions"]} == set(CASES)
    for position in stored["positions"]:
        for kind in ("floor", "floor_count", "in_process", "in_process_cpu", "http", "offset", "html", "html_floor"):
            figures = position[kind]
            assert figures["n"] >= 2 and 0 <= figures["p50_ms"] <= figures["p95_ms"], (position["case"], kind)
        assert position["overhead_ms"] == pytest.approx(position["in_process"]["p50_ms"] - position["floor"]["p50_ms"], abs=1e-3)
        assert position["rows"] == min(cases.PAGE_SIZE, position["matches"] - (position["page"] - 1) * cases.PAGE_SIZE)
        assert position["floor_matches_app"], position["case"]  # the floor encodes the very body
        assert position["html_bytes"] > position["json_bytes"] > 0
        assert position["html_ratio"] == pytest.approx(position["html"]["p50_ms"] / position["html_floor"]["p50_ms"], rel=0.01)
    names = [t["name"] for t in stored["targets"]]
    assert any("10 ms" in n for n in names) and any("overhead" in n for n in names)
    assert any("page 4" in n for n in names)  # the deep-page target is judged when a deep page exists
    assert all(isinstance(t["met"], bool) and t["value"] for t in stored["targets"])


def test_a_page_costs_at_most_three_statements_whatever_its_size(run: tuple[dict, Path]) -> None:
    result, _ = run
    by_size = result["statements_by_page_size"]
    assert set(by_size) == {"1", "50", "200"}
    assert len({tuple(v) for v in by_size.values()}) == 1  # the same statements at every size
    for position in result["positions"]:
        # The page and the capped count; "label contains" first reads the distinct labels, and
        # when none contains the text, that is all.
        expected = 2 if "label_contains" not in position["params"] else 3 if position["matches"] else 1
        queries = [s for s in position["statements"] if s != "BEGIN"]
        assert len(queries) == expected <= report.STATEMENTS_PER_REQUEST, position
        assert set(queries) <= {"SELECT", "WITH"}  # WITH RECURSIVE: the walk over the distinct labels
    target = next(t for t in result["targets"] if "queries per page" in t["name"])
    assert target["met"]


def test_list_to_ping_is_measured_on_one_2x4_server(run: tuple[dict, Path]) -> None:
    result, folder = run
    throughput = result["throughput"]
    assert set(throughput["paths"]) == {"ping", "json", "html"} and set(throughput["to_ping"]) == {"json", "html"}
    for name, figures in throughput["paths"].items():
        assert figures["requests"] > 0 and figures["errors"] == 0, (name, figures)
    assert throughput["paths"]["html"]["bytes_per_reply"] > throughput["paths"]["json"]["bytes_per_reply"] > 100
    for name, share in throughput["to_ping"].items():
        ping = throughput["paths"]["ping"]["requests_per_second"]
        assert share == pytest.approx(throughput["paths"][name]["requests_per_second"] / ping, abs=1e-3)
    log = (Path(result["path"]).parent / "gunicorn-2x4.log").read_text()
    assert log.count("Booting worker") == 2 and "gthread" in log
    names = [t["name"] for t in result["targets"]]
    assert any("JSON list page" in n for n in names) and any("HTML list page" in n for n in names)
    assert "req/s" in report.throughput_lines(result)


def test_the_table_prints_one_line_per_position(run: tuple[dict, Path]) -> None:
    result, _ = run
    lines = report.table(result).splitlines()
    assert lines[0].split()[:3] == ["case", "page", "matches"]
    assert len(lines) == 2 + len(result["positions"])
    assert all(line.startswith(p["case"]) for line, p in zip(lines[2:], result["positions"]))


def test_the_data_set_is_the_seed_and_is_reused(run: tuple[dict, Path]) -> None:
    result, folder = run
    assert result["dataset"]["reused"] is False and result["dataset"]["seed_peak_mb"] > 0
    again = dataset.ensure("sqlite", SIZE, sqlite_dir=folder, log=lambda _message: None)
    assert again.reused and again.index_changes == [] and again.seed_seconds == pytest.approx(result["dataset"]["seed_seconds"], abs=0.01)
    engine = dataset.make_engine(again.url)
    try:
        with Session(engine) as session:
            stored = [
                {c.name: getattr(row, c.name) for c in Transaction.__table__.columns}
                for row in session.scalars(select(Transaction).order_by(Transaction.id))
            ]
        assert stored == list(seed.transactions(SIZE))  # exactly what `flask seed` would store
    finally:
        engine.dispose()


def test_a_keyset_cursor_lands_where_offset_does(run: tuple[dict, Path]) -> None:
    _, folder = run
    url = dataset.bench_url("sqlite", dataset.database_name(SIZE), folder)
    app = create_app({"SQLALCHEMY_DATABASE_URI": url, "TESTING": True})
    client = app.test_client()
    engine = dataset.make_engine(url)
    try:
        for case in (c for c in cases.CASES if c.name in CASES):
            with Session(engine) as session:
                total = cases.matches(session, case)
                positions = [cases.position(session, case, d) for d in cases.depths(total, (1, 2), 4, 1_000)]
            for position in positions:
                keyset = client.get(measure.KEYSET_PATH, query_string=position.keyset_query(case)).get_json()
                offset = client.get(measure.OFFSET_PATH, query_string=position.offset_query(case)).get_json()
                assert [i["id"] for i in keyset["items"]] == [i["id"] for i in offset["items"]], (case.name, position.depth)
                assert bool(keyset["items"]) == (total > 0), (case.name, position.depth)
    finally:
        engine.dispose()
