"""cache_key_mismatch: a memoized read whose invalidation deletes another key than the read used.

Served by gunicorn with two sync workers, W1 and W2, sharing one Flask-Caching FileSystemCache
(a folder of the scenario's own; every worker reads and writes the same entries). The app logs
every cache key it gets, sets and deletes (lab/caching.py, lab mode), so the proof can name them.
Steps (every step steered: all workers but the one it needs are held busy): bob reads the
newest row's details, GET /api/transactions/<id>, on W1 (a miss: the details are stored);
alice edits its label on W2 (200, committed; W2 deletes the row's cached details after the
commit); bob reads the details again on W1, then on W2; the auditor reads the row from the
database.

Why the two keys differ in the broken app (Flask-Caching 2.5.1): memoize's key is the first 16
characters of base64(sha256("<module>.<qualname without < >>" + str(args) + str(kwargs left))) plus the
function's version hash (stored in the cache beside it); keyword arguments are first mapped to positional ones (`_memoize_kwargs_to_args`),
so Flask's call `api_transaction(tx_id=...)` and the edit's `delete_memoized(api_transaction,
...)` agree on the shape. They disagree on the value: the read's route has no int converter,
so its argument is the string '7' (hashed as "('7',)"); the edits' routes convert the id, so
the delete hashes "(7,)". The delete removes a key that was never stored and reports nothing.

Staleness is in NEITHER the ORM nor the database: the edit is committed (the auditor sees it),
and each later read is answered from the shared cache's entry stored before the edit, on both
workers. The fixed app's read and delete both use the route's int id: the delete removes the
very key the read stored, and both workers read the new row.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections import OrderedDict
from typing import Any

from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.steering import Steering
from lab.harness.steps import audit_row, edit_label, read_newest
from lab.harness.verdicts import CRASH, FRESH, INCONCLUSIVE, LOST, STALE, Judgement

CAUSE = Cause("cache_key_mismatch", "an edit deletes its row's cached details under another key, so the old details stay")

NEW_LABEL = "checked by alice"


def run(s: Scenario) -> dict[str, Any]:
    cache_log = s.workdir / "cache.jsonl"
    cache_log.touch()
    server = s.serve(workers=2, env={"LAB_CACHE_DIR": str(s.workdir / "cache"), "LAB_CACHE_LOG": str(cache_log)})
    alice, bob = s.actor("alice", server), s.actor("bob", server)
    steer = Steering(s, server, slots=2, name="worker")
    w1, w2 = steer.slots
    observations: dict[str, Any] = {"workers": {"w1": w1, "w2": w2}, "after": {}}
    steer.only(w1)
    newest = read_newest(s, bob, "the newest row, version 1 (its id for the details read)")
    if newest.get("id") is None:
        steer.release_all()
        return {**observations, "before": newest, "ack": {"status": 0}}
    row_id = newest["id"]
    observations["before"] = read_details(s, bob, row_id, "version 1, a miss: stored in the shared cache", cache_log)
    steer.only(w2)
    ack = edit_label(s, alice, row_id, NEW_LABEL, newest["version"], "200 with version 2, committed, the details deleted")
    ack["cache"] = cache_operations(cache_log, since=observations["before"]["cache_offset"])
    deleted = [op for op in ack["cache"] if op["op"] == "delete"]
    s.note("the edit's cache delete: " + ("; ".join(f"key {op['key']!r} ({'removed' if op['existed'] else 'not in the cache'})"
                                                     for op in deleted) or "none"))
    observations["ack"] = ack
    want = f"version {ack.get('version')}, label {NEW_LABEL!r}"
    for name, worker in (("w1", w1), ("w2", w2)):  # the reader's worker first, then the editor's
        steer.only(worker)
        observations["after"][name] = read_details(s, bob, row_id, want, cache_log)
    steer.release_all()
    observations["hashed"] = {key: hashed_text(key, s.module, row_id)
                              for key in [observations["before"]["key"]] + [op["key"] for op in deleted]}
    s.note("what each key hashes (worked out from the key's first 16 characters): " +
           "; ".join(f"{key!r} = {text or 'none of the two call shapes'}" for key, text in observations["hashed"].items()))
    observations["database"] = audit_row(s, s.engine(), row_id, want)
    return observations


def read_details(s: Scenario, actor: Actor, row_id: int, expected: str, cache_log: Any) -> dict[str, Any]:
    """GET /api/transactions/<id>; with the cache keys the request touched (from the app's log)."""
    offset = cache_log.stat().st_size
    reply = actor.get(f"/api/transactions/{row_id}")
    seen: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "db_conn": reply.db_conn}
    seen["cache"] = cache_operations(cache_log, since=offset)
    seen["cache_offset"] = cache_log.stat().st_size
    gets = [op for op in seen["cache"] if op["op"] == "get"]
    seen["key"] = gets[0]["key"] if gets else ""
    seen["hit"] = bool(gets and gets[0]["hit"])
    if reply.status == 200:
        body = reply.json()
        seen.update(version=body["version"], label=body["label"])
        observed = f"row {row_id} at version {body['version']}, label {body['label']!r}"
    else:
        observed = f"HTTP {reply.status}: {reply.text[:160]}"
    s.step(actor.name, f"GET /api/transactions/{row_id}", expected, observed, reply)
    s.note(f"cache key {seen['key']!r}: {'a hit, answered from the cache' if seen['hit'] else 'a miss, read and stored'}")
    return seen


def hashed_text(key: str, module: str, row_id: int) -> str:
    """Which call shape made this memoize key: api_transaction(<int id>) or api_transaction('<id>')."""
    for args in ((row_id,), (str(row_id),)):
        text = f"{module}.create_app.locals.api_transaction{args}{OrderedDict()}"  # kwargs left: none
        if base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest())[:16].decode("utf-8") == key[:16]:
            return repr(text)
    return ""


def cache_operations(path: Any, since: int) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as log:
        log.seek(since)
        return [json.loads(line) for line in log.read().splitlines() if line.strip()]


def judge(observations: dict[str, Any]) -> Judgement:
    ack, workers = observations["ack"], observations["workers"]
    before = observations.get("before", {})
    if before.get("status") != 200 or ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the setup failed: details read HTTP {before.get('status')}, edit HTTP {ack['status']}")
    database = observations["database"]
    if database["version"] < ack["version"]:
        return Judgement(LOST, f"the edit was acknowledged as version {ack['version']}, but the database has "
                               f"version {database['version']}")
    after = observations["after"]
    placed = {"before": (before, "w1"), "the edit": (ack, "w2"), "after w1": (after["w1"], "w1"), "after w2": (after["w2"], "w2")}
    misplaced = [label for label, (seen, name) in placed.items() if seen["served_by"] != workers[name]]
    if misplaced:
        return Judgement(INCONCLUSIVE, f"steering failed: {', '.join(misplaced)} not on the worker it needed")
    if before["hit"] or not before["key"]:
        return Judgement(INCONCLUSIVE, "the first details read was not a cache miss: the cache was not empty or not on")
    failed = {name: seen for name, seen in after.items() if seen["status"] != 200}
    if failed:
        return Judgement(CRASH, "a details read after the edit failed: " +
                         ", ".join(f"{name.upper()} HTTP {seen['status']}" for name, seen in failed.items()))
    deleted = [op["key"] for op in ack.get("cache", []) if op["op"] == "delete"]
    stale = [name for name, seen in after.items() if seen["version"] < ack["version"]]
    if stale:
        seen = after[stale[0]]
        where = " and ".join(f"{name.upper()} ({workers[name]})" for name in stale)
        hits = all(after[name]["hit"] for name in stale)
        return Judgement(STALE, f"bob saw version {seen['version']} on {where} after version {ack['version']} was "
                                f"acknowledged and committed (the database has version {database['version']}): "
                                f"{'answered from the shared cache' if hits else 'answered'} under key {seen['key']!r} "
                                f"({_hashed(observations, seen['key'])}), while the edit on W2 deleted "
                                f"{', '.join(repr(k) + ' (' + _hashed(observations, k) + ')' for k in deleted) or 'no key'}")
    return Judgement(FRESH, f"bob saw version {ack['version']} on W1 and W2 right after the edit: the edit deleted "
                            f"{', '.join(repr(k) for k in deleted) or 'no key'}, the key the first read had stored "
                            f"({before['key']!r})")


def _hashed(observations: dict[str, Any], key: str) -> str:
    text = observations.get("hashed", {}).get(key, "")
    if not text:
        return "a hash of neither call shape"
    return "the key of " + text.strip("'\"").split(".locals.")[-1].replace("OrderedDict()", "")
