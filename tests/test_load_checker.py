"""The load checker on a hand-made log whose anomalies are known, each found exactly once.

The log (times in seconds of one monotonic clock, two "processes" merged):
- row 1: edit acknowledged as version 2, received at 1.0. A read sent at 0.9 (before the
  receipt) shows version 1: racing, NOT stale. A read sent at 2.0 shows version 1: STALE,
  1.0 s old. A read sent at 2.5 shows version 2: fresh.
- row 2: two edits both acknowledged as version 2 (duplicate: 1 lost write); the database
  holds one of them: the final audit agrees.
- row 3: an edit acknowledged as version 2 with label "mine"; the database holds version 2
  with label "theirs": final-audit mismatch (1 lost write).
- row 4: an edit acknowledged as version 2; the database is at version 3 (an edit whose reply
  never arrived): not lost; a read showing that version 3 is not stale either ("older than",
  not "different from").
- a 500, a connection error, a 409 (correct, not an error), an exception in the load's code.
- a browse whose page 2 repeats row 7 of page 1; an edit seen at version 1 acknowledged as 3.
"""

from __future__ import annotations

import json

from loadtests import checker
from loadtests.checker import AuditRow, Record


def read(sent: float, rows: list[tuple[int, int]], process: str = "p1", **extra: object) -> Record:
    return Record(kind="read", method="GET", url="/api/transactions", sent=sent, received=sent + 0.05,
                  status=200, process=process, rows=tuple(rows), **extra)  # type: ignore[arg-type]


def edit(sent: float, received: float, row_id: int, seen: int, status: int = 200, version: int | None = None,
         label: str | None = None, process: str = "p2") -> Record:
    return Record(kind="edit", method="POST", url=f"/api/transactions/{row_id}/label", sent=sent,
                  received=received, status=status, process=process, row_id=row_id, seen_version=seen,
                  ack_version=version, ack_label=label)


LOG = [
    edit(0.8, 1.0, row_id=1, seen=1, version=2, label="new"),
    read(0.9, [(1, 1), (5, 1)]),  # racing the edit of row 1: not stale
    read(2.0, [(1, 1), (5, 1)], process="p3"),  # stale: row 1 at version 1 after version 2 was acknowledged
    read(2.5, [(1, 2)]),  # fresh
    edit(1.0, 1.2, row_id=2, seen=1, version=2, label="a"),
    edit(1.1, 1.3, row_id=2, seen=1, version=2, label="b"),  # duplicate version: a lost write
    edit(1.5, 1.6, row_id=3, seen=1, version=2, label="mine"),  # the audit finds "theirs"
    edit(1.7, 1.8, row_id=4, seen=1, version=2, label="x"),  # database ahead at version 3: fine
    read(2.2, [(4, 3)]),  # newer than acknowledged (an edit whose reply never came): not stale
    edit(1.9, 2.0, row_id=5, seen=1, status=409),  # correct refusal
    Record(kind="read", method="GET", url="/transactions", sent=3.0, received=3.1, status=500, error="HTTP 500"),
    Record(kind="read", method="GET", url="/transactions", sent=3.2, received=3.3, status=None,
           error="ConnectionRefusedError: [Errno 111]"),
    Record(kind="read", method="GET", url="/transactions", sent=3.4, received=3.5, status=200,
           exception="KeyError: 'items'"),
    read(4.0, [(6, 1), (7, 1)], browse="b1", page=1),
    read(4.2, [(7, 1), (8, 1)], browse="b1", page=2),  # row 7 again
    edit(4.5, 4.6, row_id=9, seen=1, version=3, label="blind"),
]
AUDIT = {
    1: AuditRow(2, "new", None),
    2: AuditRow(2, "b", None),
    3: AuditRow(2, "theirs", None),
    4: AuditRow(3, "later", None),
    9: AuditRow(3, "blind", None),
}


def test_each_known_anomaly_is_found_exactly() -> None:
    report = checker.check(LOG, AUDIT)

    assert [(s.row_id, s.shown_version, s.acknowledged_version, s.sent) for s in report.stale_reads] == [(1, 1, 2, 2.0)]
    assert report.stale_reads[0].staleness_seconds == 1.0
    assert report.oldest_staleness_seconds == 1.0
    assert report.reads == 6 and report.stale_share == 1 / 6  # the 500 and the broken page are not judged

    assert [(lost.row_id, lost.reason, lost.count) for lost in report.lost_writes] == [
        (2, "duplicate_version", 1),
        (3, "final_audit", 1),
    ]
    assert report.lost_count == 2
    assert report.rows_ahead_of_acks == 1  # row 4: not a loss

    assert [(e.kind, e.status) for e in report.errors] == [("5xx", 500), ("connection", None), ("exception", 200)]
    assert report.conflicts == 1 and report.acknowledged == 6 and report.edits == 7

    assert [(r.browse, r.page, r.row_ids) for r in report.repeated_rows] == [("b1", 2, (7,))]
    assert [(o.row_id, o.seen_version, o.acknowledged_version) for o in report.blind_overwrites] == [(9, 1, 3)]


def test_a_clean_history_has_no_findings() -> None:
    clean = [edit(0.8, 1.0, row_id=1, seen=1, version=2, label="new"), read(0.9, [(1, 1)]), read(1.5, [(1, 2)]),
             edit(1.6, 1.7, row_id=1, seen=1, status=409)]
    report = checker.check(clean, {1: AuditRow(2, "new", None)})
    assert (report.stale_count, report.lost_count, report.error_count) == (0, 0, 0)
    assert not report.repeated_rows and not report.blind_overwrites


def test_a_read_sent_exactly_at_the_receipt_is_not_stale() -> None:
    # "acknowledged before the read was sent" is strict: at the same instant, the read may race.
    log = [edit(0.5, 1.0, row_id=1, seen=1, version=2, label="new"), read(1.0, [(1, 1)])]
    assert checker.check(log, {1: AuditRow(2, "new", None)}).stale_count == 0


def test_staleness_counts_from_the_first_acknowledgement_newer_than_shown() -> None:
    log = [edit(0.5, 1.0, row_id=1, seen=1, version=2, label="a"), edit(2.5, 3.0, row_id=1, seen=2, version=3, label="b"),
           read(4.0, [(1, 1)]), read(4.0, [(1, 2)], process="p9")]
    report = checker.check(log, {1: AuditRow(3, "b", None)})
    assert sorted((s.shown_version, s.acknowledged_version, s.staleness_seconds) for s in report.stale_reads) == [
        (1, 3, 3.0),  # version 1 has been superseded since 1.0
        (2, 3, 1.0),  # version 2 since 3.0
    ]


def test_an_acknowledged_write_missing_from_the_database_is_lost() -> None:
    # uncommitted: every edit says version 2, the database never moved from version 1.
    log = [edit(1.0, 1.1, row_id=1, seen=1, version=2, label="a"), edit(2.0, 2.1, row_id=1, seen=1, version=2, label="b")]
    report = checker.check(log, {1: AuditRow(1, None, None)})
    assert [(lost.reason, lost.count) for lost in report.lost_writes] == [("duplicate_version", 1), ("final_audit", 1)]
    assert report.lost_count == 2  # both acknowledged edits are gone


def test_the_log_format_round_trips_and_merges_processes_by_time() -> None:
    lines = [
        json.dumps({"process": "w2", "kind": "read", "method": "GET", "url": "/transactions", "sent": 2.0,
                    "received": 2.1, "status": 200, "rows": [[1, 1]], "browse": "b", "page": 1}),
        json.dumps({"process": "w1", "kind": "edit", "method": "POST", "url": "/api/transactions/1/label",
                    "sent": 0.5, "received": 1.0, "status": 200, "row_id": 1, "seen_version": 1,
                    "ack_version": 2, "ack_label": "x", "ack_contact": None}),
        "",
    ]
    records = checker.parse_lines(lines)
    assert [r.process for r in records] == ["w1", "w2"]
    report = checker.check(records, {1: AuditRow(2, "x", None)})
    assert report.stale_count == 1 and report.lost_count == 0


def test_the_verdicts_do_not_depend_on_log_order() -> None:
    forward = checker.check(LOG, AUDIT).summary()
    assert checker.check(list(reversed(LOG)), AUDIT).summary() == forward


def test_throughput_uses_exact_times() -> None:
    records = [read(float(i), [(1, 1)]) for i in range(10)]  # 10 reads of 50 ms over 9.05 s
    figures = checker.throughput(records)
    assert figures["requests"] == 10 and figures["p50_ms"] == figures["p99_ms"] == 50.0
    assert figures["requests_per_second"] == round(10 / 9.05, 2)


def test_own_writes_only_judges_a_read_against_its_own_users_edits() -> None:
    """A replica promises read-your-writes: bob reading alice's edit late is by design, alice
    reading her own edit late is stale."""
    from loadtests.checker import EDIT, READ, Record, check

    edit = Record(EDIT, "POST", "/api/transactions/7/label", 1.0, 1.1, 200, user="alice", row_id=7,
                  seen_version=1, ack_version=2)
    bob_late = Record(READ, "GET", "/api/transactions", 1.2, 1.3, 200, user="bob", rows=((7, 1),))
    alice_late = Record(READ, "GET", "/api/transactions", 1.4, 1.5, 200, user="alice", rows=((7, 1),))
    alice_fresh = Record(READ, "GET", "/api/transactions", 1.6, 1.7, 200, user="alice", rows=((7, 2),))
    records = [edit, bob_late, alice_late, alice_fresh]

    everyone = check(records, {})
    assert everyone.stale_count == 2 and everyone.behind_others_only == 0
    own = check(records, {}, own_writes_only=True)
    assert own.stale_count == 1 and own.stale_reads[0].sent == 1.4 and own.behind_others_only == 1
    assert own.summary()["stale_judged_by"] == "own writes" and own.summary()["stale_behind_others_only"] == 1
    assert check([edit, bob_late, alice_fresh], {}, own_writes_only=True).stale_count == 0
