"""sqlite_file_replaced: the SQLite file is replaced on disk, and the app keeps serving the old one.

Served by gunicorn with two sync workers, W1 and W2 (each process has its own pool; every step
is steered: all workers but the one it needs are held busy). Sync, not gthread: the pool is per
process, so threads change nothing here, and a gthread worker accepts a connection while all
its threads are busy, so a hold cannot name the threads of two workers (tried: with 2 workers
x 2 threads the third hold was never taken within 10 s). Steps: bob reads the newest row on
W1, then on W2, so each worker's pool keeps a connection open to the database file; the syncer
does what a sync tool or a restore does: copies the live database with SQLite's backup API to
a temporary file in the same folder, changes the row's label there (the edit made elsewhere),
empties the live database's WAL (a TRUNCATE checkpoint) and renames the copy over the
database; bob reads again on W1 and W2; the auditor opens the path with a new connection.

Staleness is in NEITHER the ORM nor a database server: the file at the path holds the new row
(the auditor's new connection reads it), and the old row is read from the old file, through
the file descriptors the pooled connections opened before the rename. Their inode is no longer
at the path; /proc/<worker pid>/fd shows it open and "(deleted)" (the judgement's staleness
field says "none", the proof names the inodes).

The WAL pitfall (measured here, SQLite 3.40, both in one process and across processes): the
rename replaces only the main file; the old `-wal` and `-shm` stay beside it, and a new
connection to the new file reads them as its own. If the old WAL still holds frames that were
never checkpointed, the new connection serves the OLD file's pages for them (the replacement's
change is hidden, and a later checkpoint writes those old pages into the new file). After a
TRUNCATE checkpoint the WAL is empty and new connections read the new file correctly; the old
connections, if they read again (the broken app), then see a mixture: their old file overlaid
with pages the new file's connections wrote to the shared WAL. Closing them unused (the cure)
left the new file intact (integrity_check ok, every later write kept); a write through an old
connection instead lands in the shared WAL as a page of the OLD file, which the new file then
takes as its own (tests/test_app_sqlite_file.py: a row only the copy had vanishes). So the syncer checks
the checkpoint emptied the WAL (busy 0, 0 frames left) before it renames; without it a
replacement by rename is a corruption, not a test of the app (sqlite.org/howtocorrupt.html).
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import make_url

from lab.harness.scenario import Cause, Scenario
from lab.harness.steering import Steering
from lab.harness.steps import audit_row, read_newest
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, STALE, Judgement

CAUSE = Cause("sqlite_file_replaced", "the SQLite file is replaced on disk, but the app keeps serving the old file's rows")

NEW_LABEL = "edited on the laptop, synced"


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=2)
    bob = s.actor("bob", server)
    steer = Steering(s, server, slots=2, name="worker")
    w1, w2 = steer.slots
    observations: dict[str, Any] = {"workers": {"w1": w1, "w2": w2}, "before": {}, "after": {}}
    for name, worker in (("w1", w1), ("w2", w2)):
        steer.only(worker)
        observations["before"][name] = read_newest(
            s, bob, f"the row as seeded, version 1 ({name}'s pool keeps its connection to the file)")
    row_id = observations["before"]["w1"].get("id")
    if row_id is None:
        steer.release_all()
        observations["replacement"] = {}
        return observations
    path = Path(make_url(s.db_url).database or "")
    replacement = replace_file(s, path, row_id)
    observations["replacement"] = replacement
    want = f"version {replacement.get('version')}, label {NEW_LABEL!r} (the file now at the path)"
    for name, worker in (("w1", w1), ("w2", w2)):
        steer.only(worker)
        seen = read_newest(s, bob, want)
        seen["open_files"] = open_files(int(worker.split("/")[0]), path)
        s.note(f"{name} ({worker.split('/')[0]}) has open: " + (", ".join(
            f"inode {f['inode']}{' (deleted)' if f['deleted'] else ''}" for f in seen["open_files"]) or "nothing"))
        observations["after"][name] = seen
    steer.release_all()
    observations["database"] = audit(s, path, row_id, want)
    return observations


def replace_file(s: Scenario, path: Path, row_id: int) -> dict[str, Any]:
    """The sync tool's (or the restore's) replacement: a consistent copy, changed, renamed over."""
    temporary = path.with_name(f".{path.name}.syncing")  # same folder: the rename is atomic
    live = sqlite3.connect(path, isolation_level=None)
    copy = sqlite3.connect(temporary, isolation_level=None)
    try:
        live.backup(copy)  # SQLite's backup API: a consistent copy even while the app has it open
        copy.execute("UPDATE transactions SET label = ?, version = version + 1 WHERE id = ?", (NEW_LABEL, row_id))
        version = copy.execute("SELECT version FROM transactions WHERE id = ?", (row_id,)).fetchone()[0]
    finally:
        copy.close()  # the copy's own WAL is checkpointed into it and removed
    s.step("syncer", f"backup API copy of {path.name} to {temporary.name}, label of row {row_id} changed there",
           f"a complete copy holding version 2, label {NEW_LABEL!r}", f"copy holds version {version}")
    try:
        busy, wal_frames, _ = live.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    finally:
        live.close()
    s.step("syncer", f"PRAGMA wal_checkpoint(TRUNCATE) on {path.name}",
           "busy 0, 0 frames left: the old WAL cannot be read into the new file",
           f"busy {busy}, {wal_frames} frames left in the WAL")
    before = os.stat(path).st_ino
    os.replace(temporary, path)
    after = os.stat(path).st_ino
    leftovers = sorted(p.name for p in path.parent.glob(f"{temporary.name}*"))
    s.step("syncer", f"rename {temporary.name} over {path.name}", "the path names a new inode",
           f"inode {before} -> {after}" + (f"; left behind: {leftovers}" if leftovers else ""))
    return {"version": version, "inode_before": before, "inode_after": after,
            "checkpoint_busy": busy, "wal_frames_left": wal_frames}


def open_files(pid: int, path: Path) -> list[dict[str, Any]]:
    """The files process `pid` has open under the database's name (Linux /proc), with inodes."""
    found = []
    fd_dir = Path(f"/proc/{pid}/fd")
    for fd in sorted(fd_dir.iterdir(), key=lambda p: int(p.name)) if fd_dir.exists() else []:
        try:
            target = os.readlink(fd)
            inode = os.stat(fd).st_ino
        except OSError:  # closed meanwhile
            continue
        name = target.removesuffix(" (deleted)")
        if name == str(path):
            found.append({"fd": int(fd.name), "inode": inode, "deleted": target.endswith(" (deleted)")})
    return found


def audit(s: Scenario, path: Path, row_id: int, want: str) -> dict[str, Any]:
    engine = s.engine()
    database = audit_row(s, engine, row_id, want)
    with engine.connect() as connection:
        integrity = connection.execute(text("PRAGMA integrity_check")).scalar_one()
    database.update(integrity=integrity, inode=os.stat(path).st_ino)
    s.step("auditor", f"PRAGMA integrity_check; stat {path.name}", "ok, the replacement's inode",
           f"{integrity}, inode {database['inode']}")
    return database


def judge(observations: dict[str, Any]) -> Judgement:
    before, after, workers = observations["before"], observations["after"], observations["workers"]
    replacement, database = observations["replacement"], observations.get("database", {})
    if any(seen["status"] != 200 for seen in before.values()) or not replacement:
        return Judgement(INCONCLUSIVE, f"the setup failed: reads {[b['status'] for b in before.values()]}")
    if replacement["checkpoint_busy"] or replacement["wal_frames_left"]:
        return Judgement(INCONCLUSIVE, f"the live WAL was not emptied before the rename (busy "
                                       f"{replacement['checkpoint_busy']}, {replacement['wal_frames_left']} frames)")
    old, new = replacement["inode_before"], replacement["inode_after"]
    if old == new or database.get("inode") != new or database.get("version") != replacement["version"]:
        return Judgement(INCONCLUSIVE, f"the replacement did not take: inode {old} -> {new}, the auditor read "
                                       f"version {database.get('version')} from inode {database.get('inode')}")
    if database.get("integrity") != "ok":
        return Judgement(INCONCLUSIVE, f"the replaced database is damaged: integrity_check says {database.get('integrity')!r}")
    reads = {**{f"before {k}": v for k, v in before.items()}, **{f"after {k}": v for k, v in after.items()}}
    misplaced = [label for label, seen in reads.items() if seen["served_by"] != workers[label.split()[1]]]
    if misplaced:
        return Judgement(INCONCLUSIVE, f"steering failed: {', '.join(misplaced)} not on the worker it needed")
    failed = [name for name, seen in after.items() if seen["status"] != 200]
    if failed:
        return Judgement(CRASH, f"bob's read on {failed[0].upper()} after the replacement failed with HTTP "
                                f"{after[failed[0]]['status']}")
    stale = [name for name, seen in after.items() if seen["version"] < replacement["version"]]
    if stale:
        first = after[stale[0]]
        held = sorted({f["inode"] for name in stale for f in after[name]["open_files"] if f["deleted"]})
        same = [name.upper() for name in stale if after[name]["db_conn"] == before[name]["db_conn"]]
        return Judgement(STALE, f"bob read version {first['version']} on {' and '.join(n.upper() for n in stale)} after "
                                f"the file at the path was replaced by one holding version {replacement['version']} "
                                f"(inode {old} -> {new}; the auditor's new connection reads version {database['version']}): "
                                f"the workers read the old file through connections opened before the rename"
                                + (f" ({', '.join(same)} on the same connection as before)" if same else "")
                                + (f", still holding inode {', '.join(map(str, held))} open, deleted" if held else ""))
    holding_old = [name.upper() for name, seen in after.items() if any(f["inode"] == old for f in seen["open_files"])]
    renewed = all(after[name]["db_conn"] != before[name]["db_conn"] for name in after)
    return Judgement(FRESH, f"bob read version {replacement['version']} on W1 and W2 right after the file was replaced "
                            f"(inode {old} -> {new}): each pool replaced its connections to the old file"
                            + (" (new connections on both workers)" if renewed else "")
                            + (f" ({', '.join(holding_old)} still holds inode {old} open)" if holding_old else ""))
