"""`make load-readme` writes "Which causes a load shows" from stored loads: each cell read
from a run's results.json, each cause classed by where its broken variant failed while the
fixed app under the same load did not, the fixed app's totals summed, the folders named."""

from __future__ import annotations

import json
from pathlib import Path

from loadtests import readme


def store(results: Path, cause: str, backend: str, broken: dict, fixed: dict, version: str) -> None:
    folder = results / backend / cause / "load" / "20261203T100000Z"
    folder.mkdir(parents=True)
    options = {"users": 50, "duration": 20, "reader_weight": 9, "writer_weight": 1, "size": 2000}
    apps = {name: {"server_version": version, "checker": {"reads": 100, "acknowledged": 10, "conflicts": 2,
                                                           "blind_overwrites": 0, "repeated_row_pages": 0,
                                                           "errors_by_kind": {"5xx": figures["errors"]} if figures["errors"] else {},
                                                           **figures},
                     "server_exceptions": {"DetachedInstanceError": figures["errors"]} if figures["errors"] else {}}
            for name, figures in (("broken", broken), ("fixed", fixed))}
    (folder / "results.json").write_text(json.dumps({"cause": cause, "backend": backend, "options": options,
                                                      "started_at": "2026-12-03T10:00:00+00:00", "apps": apps}))
    (folder.parent / "latest").symlink_to(folder.name)


def clean(stale: int = 0, lost: int = 0, errors: int = 0) -> dict:
    return {"stale_reads": stale, "lost_writes": lost, "errors": errors}


def test_the_table_classes_each_cause_from_its_runs(tmp_path: Path) -> None:
    versions = {"sqlite": "SQLite 3.40.1", "postgresql": "PostgreSQL 15.20", "mariadb": "MariaDB 10.11.19"}
    for backend, version in versions.items():
        store(tmp_path, "uncommitted", backend, clean(stale=7, lost=3), clean(), version)
        store(tmp_path, "global_cache", backend, clean(errors=5) if backend == "sqlite" else clean(), clean(), version)
        store(tmp_path, "background_app_context", backend, clean(), clean(), version)
    text = readme.render(readme.collect(tmp_path))
    assert "| cause | SQLite 3.40.1 | PostgreSQL 15.20 | MariaDB 10.11.19 |" in text
    assert "| `uncommitted` | 7/3/0 | 7/3/0 | 7/3/0 |" in text
    assert "| `lost_update` | not run | not run | not run |" in text  # a cause with a broken variant and no run
    assert "**A load shows it on every backend it ran on**: `uncommitted` (stale reads, lost writes)" in text
    assert ("`global_cache` on SQLite 3.40.1 (errors; errors: 5xx 5; server exceptions: `DetachedInstanceError` 5), "
            "not on PostgreSQL 15.20, MariaDB 10.11.19") in text
    assert "**Only a scenario shows it**: `background_app_context` (the bug lives in the CLI queue worker" in text
    assert "**The fixed app had 0 stale reads, 0 lost writes and 0 errors in every one of these runs** (9 runs" in text
    assert "50 users (9 readers : 1 writer) for 20 s per app on 2,000 rows" in text
    assert "results/sqlite/uncommitted/load/20261203T100000Z" in text or str(tmp_path) in text


def test_a_fixed_app_that_failed_is_said_and_the_cause_not_counted_as_shown(tmp_path: Path) -> None:
    store(tmp_path, "uncommitted", "sqlite", clean(stale=4), clean(stale=1), "SQLite 3.40.1")
    text = readme.render(readme.collect(tmp_path))
    assert "**The fixed app was not clean**: 1 stale reads" in text
    assert "**Not judged: the fixed app failed (or has no result) under the same load**: `uncommitted` on SQLite" in text
    assert "**Only a scenario shows it**" not in text


def test_both_readmes_carry_the_markers() -> None:
    for page in readme.READMES:
        text = page.read_text()
        assert text.index(readme.START) < text.index(readme.END), page


def test_write_replaces_only_what_stands_between_the_markers(tmp_path: Path) -> None:
    page = tmp_path / "README.md"
    page.write_text(f"before\n{readme.START} (old) -->\nold table\n{readme.END}\nafter\n")
    readme.write("new table", (page,))
    assert page.read_text() == f"before\n{readme.START_LINE}\nnew table\n{readme.END}\nafter\n"
    readme.write("newer table", (page,))
    assert page.read_text() == f"before\n{readme.START_LINE}\nnewer table\n{readme.END}\nafter\n"
