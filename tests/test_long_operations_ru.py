"""reports/long-operations.ru.md is written from a real run of lab/long_operations: every
figure it states is one of the measurements, in Russian form, and a point that does not apply
to a backend says why."""

from __future__ import annotations

import pytest

from lab import databases
from reporting import long_operations_ru as ru


def test_russian_numbers_and_plurals() -> None:
    assert ru.number(0.461) == "0,46" and ru.megabytes(4_132_392) == "4,1 МБ"
    assert [ru.plural(n, "коммит", "коммита", "коммитов") for n in (1, 2, 5, 11, 21, 22, 112)] == [
        "1 коммит", "2 коммита", "5 коммитов", "11 коммитов", "21 коммит", "22 коммита", "112 коммитов"]


@pytest.mark.parametrize("server", ["sqlite", "postgresql"])
def test_the_document_states_this_runs_figures(server: str) -> None:
    try:
        results = ru.measure([server], rows=500)
    except databases.BackendUnavailable as error:
        if server in databases.required_backends():
            pytest.fail(f"required backend unavailable: {error}", pytrace=False)
        pytest.skip(str(error))
    text = ru.render(results)
    points = results[server]["points"]
    assert text.startswith("# Почему долгая операция не должна жить в одном контексте сессии")
    assert text.count("\n## ") == len(ru.POINTS) + 1  # one section per point, then the rules
    assert results[server]["server"] in text
    for run in points["stale_snapshot"]["runs"]:
        assert run["isolation_level"] in text
        if run["stale_reads"]:
            assert f"версию {run['version_at_first_read']}" in text and f"{ru.number(run['seconds_stale'])} с" in text
    lock = points["row_lock_wait"]
    assert f"`{lock['same_row']['timeout_setting']}`" in text and ru.number(lock["same_row"]["waited_s"]) in text
    assert points["pool_exhaustion"]["request"]["message"] in text
    if server == "sqlite":
        wal = points["wal_growth"]
        assert ru.megabytes(wal["with_reader"]["wal_bytes"]) in text
        assert f"не применимо — {ru.NOT_APPLICABLE['vacuum_held_back']}" in text
    else:
        for variant in points["vacuum_held_back"]["variants"]:
            assert f"VACUUM оставил {ru.plural(variant['dead_rows_while_open'], 'мёртвую строку', 'мёртвые строки', 'мёртвых строк')}" in text
        assert f"не применимо — {ru.NOT_APPLICABLE['wal_growth']}" in text
    memory = points["session_memory"]["variants"]
    assert ru.megabytes(memory[0]["peak_bytes"]) in text
    assert "None" not in text and "{" not in text
    english = [word for word in (" only", " the ", " and ", " while ") if word in text.replace("`", "")]
    assert not english, english  # no English sentence leaked from the measurements (identifiers aside)
