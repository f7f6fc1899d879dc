"""`make bench-doctor`'s machinery in a tiny form: the shape of its result and that the doctor
really ran in the "with" measurements (and not in the "without" ones). Never timings."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench import doctor as bench_doctor

TINY = bench_doctor.Settings(warmup=2, rounds=2, per_round=3, http=True, http_rounds=1, http_per_round=20,
                             http_threads=4, http_warmup=4, memory_first=10, memory_total=30)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return bench_doctor.run("sqlite", TINY, tmp_path_factory.mktemp("bench-doctor") / "results")


def test_the_result_is_stored_with_a_latest_link(result: dict) -> None:
    path = Path(result["path"])
    assert path.name == "result.json" and path.parent.parent.name == "bench-doctor"
    assert path.parent.parent.parent.name == "sqlite"
    assert (path.parent.parent / "latest").resolve() == path.parent.resolve()
    stored = json.loads(path.read_text())
    assert stored["schema_version"] == bench_doctor.SCHEMA_VERSION and stored["size"] == bench_doctor.SIZE
    assert stored["server_version"].startswith("SQLite ")
    assert [t["name"] for t in stored["targets"]] == [t["name"] for t in result["targets"]]
    assert all(isinstance(t["met"], bool) for t in stored["targets"])


def test_in_process_has_both_pages_both_variants_and_the_doctor_ran(result: dict) -> None:
    part = result["in_process"]
    assert set(part["pages"]) == set(bench_doctor.PAGES)
    for page in part["pages"].values():
        for variant in ("without", "with"):
            assert page[variant]["n"] == TINY.rounds * TINY.per_round
            assert 0 < page[variant]["p50_ms"] <= page[variant]["p90_ms"]
        assert isinstance(page["overhead_p50_percent"], float)
    doctor = part["doctor"]
    assert doctor["extension_installed"] and doctor["not_on_baseline_app"]
    # Every timed "with" request went through the doctor's response check.
    assert doctor["requests_seen_by_doctor"] == doctor["requests_with_doctor"] == TINY.rounds * TINY.per_round * 2
    assert part["findings"] == []  # the fixed app is clean


def test_gunicorn_doctor_runs_only_on_the_with_server(result: dict) -> None:
    part = result["gunicorn"]
    assert part["doctor_answers_probe"] == {"without": False, "with": True, "with_after_load": True}
    for page in part["pages"].values():
        for variant in ("without", "with"):
            assert page[variant]["requests"] == TINY.http_rounds * TINY.http_per_round
            assert page[variant]["errors"] == 0 and page[variant]["requests_per_second"] > 0


def test_memory_is_measured_with_the_doctor_on(result: dict) -> None:
    part = result["memory"]
    assert part["requests_first"] == 10 and part["requests_total"] == 30
    assert part["rss_first_kib"] > 0 and part["rss_last_kib"] > 0
    assert part["ratio"] == pytest.approx(part["rss_last_kib"] / part["rss_first_kib"], abs=1e-3)
    assert part["doctor"]["extension_installed"] and part["doctor"]["requests_seen_by_doctor"] == 30
    assert part["doctor_state_sizes"]["open_transactions"] == 0


def test_the_table_names_every_section_and_target(result: dict) -> None:
    text = bench_doctor.table(result)
    for heading in ("1. in process", "2. gunicorn", "3. memory", "targets:"):
        assert heading in text
    assert text.count("[met]") + text.count("[MISSED]") == len(result["targets"]) == 5


def test_the_doctor_is_gone_after_the_run(result: dict) -> None:
    from stale_doctor.monitor import MONITOR

    assert not MONITOR.installed
