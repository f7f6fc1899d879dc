"""Judge a load's merged request log: stale reads, lost writes and errors.

Pure functions over plain records, no I/O: the same log always gives the same report, and a
distributed run (several locust processes, one log each) is judged as one history because
every record carries `time.monotonic()` stamps, which on Linux are one system-wide clock.

The three judgements (docs: loadtests/README.md):
- a read is STALE when a row it shows has a version OLDER than a version of that row whose
  edit was acknowledged (its reply received) before the read was sent. "Older than", never
  "different from": a read racing an edit may show either version and is not stale.
  The stamps are taken in the load generator around the request, so a send stamp is never
  later than the real send and a receive stamp never earlier than the real receipt: both
  errors can only hide a stale read, never invent one.
- a write is LOST when two acknowledged edits of one row report the same new version (only
  one of them can be in the database), or when the row's final version and contents in the
  database, audited right after the run, are not those of its highest acknowledged edit. A
  database AHEAD of every acknowledgement is not a loss: an edit whose reply never arrived
  (the load stopped, the connection failed) may still have been committed.
  For a cause whose cure promises read-your-writes only (a replica: replica_lag), a read is
  judged against the acknowledged edits of ITS OWN user: another user's edit may show late by
  design, and those reads are counted apart (`stale_behind_others_only`, informational).
- two informational counts, outside those three: a row REPEATED on a later page of the same
  browse (one listing followed page by page; keyset pages cannot repeat a row, OFFSET pages
  can when rows enter the list above), and a BLIND OVERWRITE, an edit acknowledged with a new
  version other than the version its user saw plus one: the app ignored the version sent and
  replaced changes the user never saw (the lost-update anomaly, although the database then
  holds what was last acknowledged, so it is not a lost write by the definition above).
- an ERROR is a 5xx, a request without an HTTP reply (connection refused, reset, timeout), an
  exception in the load's own code (e.g. a page it could not read), or a 4xx the load did not
  ask for. A 409 to an edit is the correct answer to a stale version, not an error.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

READ, EDIT, PING = "read", "edit", "ping"


@dataclass(frozen=True)
class Record:
    """One request as the load generator logged it (one JSON line)."""

    kind: str  # READ, EDIT or PING
    method: str
    url: str
    sent: float  # time.monotonic() just before the request was handed to the client
    received: float  # time.monotonic() just after the whole reply was read (or the failure)
    status: int | None  # None: no HTTP reply at all
    process: str = ""
    user: str = ""
    error: str | None = None  # the client's failure (connection error, timeout)
    exception: str | None = None  # an exception in the load's own code
    rows: tuple[tuple[int, int], ...] = ()  # READ: (id, version) of every row shown
    browse: str | None = None  # READ: the listing this page belongs to
    page: int | None = None  # READ: its page number in that listing, from 1
    row_id: int | None = None  # EDIT: the row edited
    seen_version: int | None = None  # EDIT: the version the user saw and sent
    ack_version: int | None = None  # EDIT, 200: the new version the app acknowledged
    ack_label: str | None = None  # EDIT, 200: the row's label in the acknowledgement
    ack_contact: int | None = None  # EDIT, 200: the row's contact id in the acknowledgement

    @property
    def acknowledged(self) -> bool:
        return self.kind == EDIT and self.status == 200 and self.ack_version is not None and self.exception is None


@dataclass(frozen=True)
class AuditRow:
    """A row as the database holds it after the run, read directly (not through the app)."""

    version: int
    label: str | None
    contact_id: int | None


@dataclass(frozen=True)
class StaleRead:
    url: str
    sent: float
    process: str
    row_id: int  # the stalest row of this read
    shown_version: int
    acknowledged_version: int  # the newest version of that row acknowledged before the read
    staleness_seconds: float  # read sent minus the receipt of the first ack newer than shown
    stale_rows: int  # rows of this read that were stale


@dataclass(frozen=True)
class LostWrite:
    row_id: int
    reason: str  # "duplicate_version" or "final_audit"
    count: int  # acknowledged edits lost by this finding
    detail: str


@dataclass(frozen=True)
class RepeatedRows:
    url: str
    browse: str
    page: int
    row_ids: tuple[int, ...]  # rows this page showed that an earlier page of the browse showed


@dataclass(frozen=True)
class BlindOverwrite:
    row_id: int
    seen_version: int
    acknowledged_version: int
    url: str


@dataclass(frozen=True)
class ErrorFinding:
    kind: str  # "5xx", "connection", "exception", "unexpected_4xx"
    url: str
    status: int | None
    message: str


@dataclass
class Report:
    requests: int = 0
    reads: int = 0  # successful reads (200) that were judged
    edits: int = 0
    acknowledged: int = 0
    conflicts: int = 0  # 409: the app refused an edit made from an old version (correct)
    pings: int = 0
    stale_reads: list[StaleRead] = field(default_factory=list)
    lost_writes: list[LostWrite] = field(default_factory=list)
    errors: list[ErrorFinding] = field(default_factory=list)
    repeated_rows: list[RepeatedRows] = field(default_factory=list)
    blind_overwrites: list[BlindOverwrite] = field(default_factory=list)
    rows_edited: int = 0
    rows_ahead_of_acks: int = 0  # database newer than every ack (unacknowledged commits): fine
    own_writes_only: bool = False  # stale judged against the reader's own acknowledged edits only
    behind_others_only: int = 0  # own_writes_only: reads older only than other users' acks (by design)

    @property
    def stale_count(self) -> int:
        return len(self.stale_reads)

    @property
    def stale_share(self) -> float:
        return self.stale_count / self.reads if self.reads else 0.0

    @property
    def oldest_staleness_seconds(self) -> float:
        return max((s.staleness_seconds for s in self.stale_reads), default=0.0)

    @property
    def lost_count(self) -> int:
        return sum(lost.count for lost in self.lost_writes)

    @property
    def error_count(self) -> int:
        return len(self.errors)

    @property
    def errors_by_kind(self) -> dict[str, int]:
        return dict(sorted(Counter(e.kind for e in self.errors).items()))

    def summary(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "reads": self.reads, "edits": self.edits,
            "acknowledged": self.acknowledged, "conflicts": self.conflicts, "pings": self.pings,
            "stale_reads": self.stale_count, "stale_share": round(self.stale_share, 6),
            "oldest_staleness_seconds": round(self.oldest_staleness_seconds, 3),
            "lost_writes": self.lost_count, "errors": self.error_count, "errors_by_kind": self.errors_by_kind,
            "repeated_row_pages": len(self.repeated_rows), "blind_overwrites": len(self.blind_overwrites),
            "rows_edited": self.rows_edited, "rows_ahead_of_acks": self.rows_ahead_of_acks,
            "stale_judged_by": "own writes" if self.own_writes_only else "every user's writes",
            "stale_behind_others_only": self.behind_others_only,
        }

    def to_dict(self, examples: int = 20) -> dict[str, Any]:
        """The summary plus the first findings of each kind (the stalest reads first)."""
        stalest = sorted(self.stale_reads, key=lambda s: (-s.staleness_seconds, s.sent))
        return {
            **self.summary(),
            "stale_examples": [asdict(s) for s in stalest[:examples]],
            "lost_examples": [asdict(lost) for lost in self.lost_writes[:examples]],
            "error_examples": [asdict(e) for e in self.errors[:examples]],
            "repeated_examples": [asdict(r) for r in self.repeated_rows[:examples]],
            "overwrite_examples": [asdict(o) for o in self.blind_overwrites[:examples]],
        }


# ---- parsing ---------------------------------------------------------------------------

def parse_record(line: Mapping[str, Any]) -> Record:
    """A Record from one decoded JSON log line (the locustfile's format)."""
    return Record(
        kind=str(line["kind"]), method=str(line.get("method", "GET")), url=str(line.get("url", "")),
        sent=float(line["sent"]), received=float(line["received"]),
        status=None if line.get("status") is None else int(line["status"]),
        process=str(line.get("process", "")), user=str(line.get("user", "")),
        error=line.get("error"), exception=line.get("exception"),
        rows=tuple((int(i), int(v)) for i, v in line.get("rows") or ()),
        browse=line.get("browse"), page=line.get("page"),
        row_id=line.get("row_id"), seen_version=line.get("seen_version"),
        ack_version=line.get("ack_version"), ack_label=line.get("ack_label"), ack_contact=line.get("ack_contact"),
    )


def parse_lines(lines: Iterable[str]) -> list[Record]:
    """Records from JSONL text lines, blank lines skipped, in send order (merge-safe)."""
    records = [parse_record(json.loads(line)) for line in lines if line.strip()]
    return sorted(records, key=lambda r: (r.sent, r.received, r.process, r.url))


# ---- judging ---------------------------------------------------------------------------

def check(records: Iterable[Record], audit: Mapping[int, AuditRow], own_writes_only: bool = False) -> Report:
    """Judge a merged log against the database's final state of the edited rows; with
    `own_writes_only`, a read is stale only against its own user's acknowledged edits."""
    records = sorted(records, key=lambda r: (r.sent, r.received, r.process, r.url))
    report = Report(requests=len(records), own_writes_only=own_writes_only)
    for record in records:
        finding = error_of(record)
        if finding is not None:
            report.errors.append(finding)
        if record.kind == EDIT:
            report.edits += 1
            report.acknowledged += record.acknowledged
            report.conflicts += record.status == 409
        elif record.kind == PING:
            report.pings += 1
        elif record.kind == READ and record.status == 200 and record.exception is None:
            report.reads += 1
    acks = [r for r in records if r.acknowledged]
    if own_writes_only:
        by_user: dict[str, list[Record]] = defaultdict(list)
        for record in records:
            by_user[record.user].append(record)
        report.stale_reads = sorted((stale for user, own in by_user.items()
                                     for stale in stale_reads(own, [a for a in own if a.acknowledged])),
                                    key=lambda stale: stale.sent)
        report.behind_others_only = len(stale_reads(records, acks)) - report.stale_count
    else:
        report.stale_reads = stale_reads(records, acks)
    report.lost_writes = lost_writes(acks, audit)
    report.repeated_rows = repeated_rows(records)
    report.blind_overwrites = [
        BlindOverwrite(int(a.row_id or 0), int(a.seen_version or 0), int(a.ack_version or 0), a.url)
        for a in acks if a.seen_version is not None and a.ack_version != a.seen_version + 1
    ]
    report.rows_edited = len({r.row_id for r in acks})
    report.rows_ahead_of_acks = sum(
        1 for row_id, top in _highest_ack_versions(acks).items() if row_id in audit and audit[row_id].version > top
    )
    return report


def error_of(record: Record) -> ErrorFinding | None:
    if record.exception is not None:
        return ErrorFinding("exception", record.url, record.status, record.exception)
    if record.status is None or record.status == 0:
        return ErrorFinding("connection", record.url, None, record.error or "no HTTP reply")
    if record.status >= 500:
        return ErrorFinding("5xx", record.url, record.status, record.error or f"HTTP {record.status}")
    if record.status >= 400 and not (record.kind == EDIT and record.status == 409):
        return ErrorFinding("unexpected_4xx", record.url, record.status, record.error or f"HTTP {record.status}")
    return None


def stale_reads(records: Iterable[Record], acks: list[Record]) -> list[StaleRead]:
    """Every successful read showing a row older than an edit acknowledged before it was sent."""
    # Per row: acks in order of receipt, and the running maximum of the acknowledged
    # version (non-decreasing), so both questions are a binary search:
    # "newest version acknowledged before t" and "first ack newer than version v".
    by_row: dict[int, list[Record]] = defaultdict(list)
    for ack in sorted(acks, key=lambda a: (a.received, a.sent)):
        by_row[int(ack.row_id or 0)].append(ack)
    received = {row: [a.received for a in row_acks] for row, row_acks in by_row.items()}
    running_max: dict[int, list[int]] = {}
    for row, row_acks in by_row.items():
        top, maxima = 0, []
        for ack in row_acks:
            top = max(top, int(ack.ack_version or 0))
            maxima.append(top)
        running_max[row] = maxima

    found = []
    for read in records:
        if read.kind != READ or read.status != 200 or read.exception is not None:
            continue
        worst: tuple[float, int, int, int] | None = None  # staleness, row, shown, acknowledged
        stale_rows = 0
        for row_id, shown in read.rows:
            if row_id not in by_row:
                continue
            known = bisect.bisect_left(received[row_id], read.sent)  # acks received strictly before
            if known == 0 or running_max[row_id][known - 1] <= shown:
                continue
            stale_rows += 1
            first_newer = bisect.bisect_right(running_max[row_id], shown, 0, known)
            staleness = read.sent - received[row_id][first_newer]
            candidate = (staleness, row_id, shown, running_max[row_id][known - 1])
            if worst is None or candidate[0] > worst[0]:
                worst = candidate
        if worst is not None:
            found.append(StaleRead(read.url, read.sent, read.process, worst[1], worst[2], worst[3],
                                   round(worst[0], 6), stale_rows))
    return found


def lost_writes(acks: list[Record], audit: Mapping[int, AuditRow]) -> list[LostWrite]:
    """Duplicate acknowledged versions, then final-audit mismatches, row by row."""
    found: list[LostWrite] = []
    by_row: dict[int, list[Record]] = defaultdict(list)
    for ack in acks:
        by_row[int(ack.row_id or 0)].append(ack)
    for row_id in sorted(by_row):
        versions = Counter(int(a.ack_version or 0) for a in by_row[row_id])
        for version, count in sorted(versions.items()):
            if count > 1:
                found.append(LostWrite(row_id, "duplicate_version", count - 1,
                                       f"{count} acknowledged edits of row {row_id} report version {version}"))
        top = max(versions)
        finals = {(a.ack_label, a.ack_contact) for a in by_row[row_id] if a.ack_version == top}
        db = audit.get(row_id)
        if db is None:
            found.append(LostWrite(row_id, "final_audit", 1, f"row {row_id} is missing from the database"))
        elif db.version < top or (db.version == top and (db.label, db.contact_id) not in finals):
            wanted = " or ".join(f"label {label!r} contact {contact}" for label, contact in sorted(finals, key=repr))
            found.append(LostWrite(
                row_id, "final_audit", 1,
                f"row {row_id} is at version {db.version} label {db.label!r} contact {db.contact_id} in the "
                f"database; its highest acknowledged edit is version {top} with {wanted}",
            ))
    return found


def repeated_rows(records: Iterable[Record]) -> list[RepeatedRows]:
    """Pages showing a row that an earlier page of the same browse already showed."""
    browses: dict[str, list[Record]] = defaultdict(list)
    for record in records:
        if record.kind == READ and record.status == 200 and record.browse is not None and record.exception is None:
            browses[record.browse].append(record)
    found = []
    for browse, pages in browses.items():
        shown: set[int] = set()
        for page in sorted(pages, key=lambda r: (r.page or 0, r.sent)):
            ids = [row_id for row_id, _version in page.rows]
            again = tuple(sorted(set(ids) & shown))
            if again:
                found.append(RepeatedRows(page.url, browse, int(page.page or 0), again))
            shown.update(ids)
    return sorted(found, key=lambda r: (r.browse, r.page))


def _highest_ack_versions(acks: Iterable[Record]) -> dict[int, int]:
    top: dict[int, int] = {}
    for ack in acks:
        row_id = int(ack.row_id or 0)
        top[row_id] = max(top.get(row_id, 0), int(ack.ack_version or 0))
    return top


# ---- throughput and latency ------------------------------------------------------------

def throughput(records: Iterable[Record]) -> dict[str, Any]:
    """Requests, requests/s and latency percentiles (ms) from the log itself.

    The log is complete in every mode, where locust's own final figures can miss the last
    report of a distributed worker. Requests/s: all requests over the span from the first
    send to the last receipt. Percentiles: nearest rank over exact (receive - send) times.
    """
    records = list(records)
    if not records:
        return {"requests": 0, "requests_per_second": 0.0, "p50_ms": 0.0, "p95_ms": 0.0, "p99_ms": 0.0}
    span = max(r.received for r in records) - min(r.sent for r in records)
    latencies = sorted((r.received - r.sent) * 1000 for r in records)
    return {
        "requests": len(records),
        "requests_per_second": round(len(records) / span, 2) if span > 0 else 0.0,
        **{f"p{p}_ms": round(nearest_rank(latencies, p / 100), 1) for p in (50, 95, 99)},
    }


def nearest_rank(ordered: list[float], fraction: float) -> float:
    """The smallest value with at least `fraction` of the values at or below it."""
    if not ordered:
        return 0.0
    rank = max(1, -(-len(ordered) * fraction // 1))  # ceil without floats drifting
    return ordered[int(rank) - 1]
