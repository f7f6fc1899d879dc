"""`make isolation`: the probe measures, on every backend, the table committed in expected_isolation.json.

Each backend gets a database of its own for this (not the shared `db_url` one: the probe
creates its own table and drops its database at the end).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from lab import databases
from lab.harness import isolation


@pytest.fixture
def probe_url(backend: str, tmp_path: Path) -> Iterator[str]:
    name = f"lab_iso_{databases.owner_tag('main')}"
    try:
        url = databases.private_database(backend, name, tmp_path)
    except databases.BackendUnavailable as error:
        if backend in databases.required_backends():
            pytest.fail(f"required backend unavailable: {error}", pytrace=False)
        pytest.skip(str(error))
    yield url
    databases.drop_database(url)


def test_probe_measures_the_expected_table(backend: str, probe_url: str) -> None:
    result = isolation.probe_backend(backend, probe_url)
    expected = isolation.load_expected()[backend]
    assert result["levels"] == expected, json.dumps(result["details"], indent=2)
    # Each level really ran at that level (asked from the server, not assumed).
    assert [d["level"].split(" (")[0] for d in result["details"].values()] == isolation.LEVELS[backend]
    assert result["server"].split()[0] in ("SQLite", "PostgreSQL", "MariaDB")


def test_expected_file_covers_every_backend_level_and_probe() -> None:
    expected = isolation.load_expected()
    assert {b: list(levels) for b, levels in expected.items()} == isolation.LEVELS
    for levels in expected.values():
        for cells in levels.values():
            assert list(cells) == list(isolation.COLUMNS)


def test_a_difference_from_the_expected_file_fails_the_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = json.loads(isolation.EXPECTED_FILE.read_text())
    data["levels"]["sqlite"]["SERIALIZABLE"]["lost_update"] = "lost"  # what SQLite does NOT do
    wrong = tmp_path / "expected_isolation.json"
    wrong.write_text(json.dumps(data))
    monkeypatch.setattr(isolation, "EXPECTED_FILE", wrong)
    assert isolation.main(["--db", "sqlite"]) == 1
    out = capsys.readouterr().out
    assert "| SQLite " in out and "sqlite SERIALIZABLE lost update: expected lost, measured refused" in out


def test_cli_refuses_an_unknown_backend(capsys: pytest.CaptureFixture[str]) -> None:
    assert isolation.main(["--db", "oracle"]) == 2
    assert "sqlite, postgresql, mariadb, all" in capsys.readouterr().err
