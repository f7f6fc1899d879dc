"""prefork_refresher: workers serve the asset prices they were forked with; no refresher runs in them.

Served as `gunicorn --preload --workers 2` (sync workers), the same command line for the
broken and the fixed app, with the prices' refresh interval set short
(LAB_PRICES_REFRESH_SECONDS). Steps: carol asks each worker for /api/prices (every other worker
held busy, so the answer names the worker it was steered to); the auditor changes one asset's
price in the database, commits and reads it back; then carol asks each worker again, steered,
once per interval, until that worker serves the new price or a bound of several refresh
intervals after the change has passed (the bound is the only wait, and it ends the broken run).

Each answer carries when its copy was read from the database (`refreshed_at`) and by which
process (`refreshed_by`). Broken: create_app() read the prices and started the refresher in the
gunicorn master (--preload creates the app there), and fork() copied the dict but not the
thread: every worker serves a copy read by the master before the fork, and its refresh time
never moves: STALE. Fixed: each worker starts its own refresher at its first request, so each
serves a copy it read itself, and the new price within an interval or two: FRESH. The
staleness is in neither the ORM nor the database (the auditor reads the new price back): it is
in a per-process copy that no thread refreshes (the judgement's staleness field says "none").
"""

from __future__ import annotations

import datetime as dt
import time
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.steering import Steering
from lab.harness.verdicts import FRESH, INCONCLUSIVE, LOST, STALE, Judgement
from lab.models import AssetPrice

CAUSE = Cause("prefork_refresher", "under gunicorn --preload, a price changed in the database never shows: "
                                   "the workers serve the copy they were forked with")

SYMBOL = "ETH"
INTERVAL_SECONDS = 0.5
BOUND_INTERVALS = 6  # how many refresh intervals after the change the scenario waits at most


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _clock(stamp: str | None) -> str:
    return dt.datetime.fromisoformat(stamp).strftime("%H:%M:%S.%f") if stamp else "never"


def ask(s: Scenario, steer: Steering, worker: str, carol: Actor, expected: str, record: bool = True) -> dict[str, Any]:
    """GET /api/prices on `worker` (every other worker held busy)."""
    steer.only(worker)
    reply = carol.get("/api/prices")
    seen: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "steered_to": worker}
    if reply.status == 200:
        body = reply.json()
        seen.update(price=body["prices"].get(SYMBOL), refreshed_at=body["refreshed_at"],
                    refreshed_by=body["refreshed_by"], pid=body["served_by"])
        observed = (f"{SYMBOL} {seen['price']} USD, copy read at {_clock(seen['refreshed_at'])} "
                    f"by pid {seen['refreshed_by']}")
    else:
        observed = f"HTTP {reply.status}: {reply.text[:160]}"
    if record:
        s.step(carol.name, f"GET /api/prices on {worker}", expected, observed, reply)
    return seen


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=2, preload=True, env={"LAB_PRICES_REFRESH_SECONDS": str(INTERVAL_SECONDS)})
    master = server.process.pid if server.process else 0
    s.note(f"gunicorn master pid {master}; the prices are refreshed every {INTERVAL_SECONDS} s")
    carol = s.actor("carol", server)
    steer = Steering(s, server, slots=2, name="worker")
    before = {w: ask(s, steer, w, carol, f"the seeded prices, a copy read by {w} itself") for w in steer.slots}

    engine = s.engine()
    with engine.begin() as connection:
        old = connection.execute(select(AssetPrice.usd_price).where(AssetPrice.symbol == SYMBOL)).scalar_one()
        new = (old * 2 + Decimal("0.5")).normalize()
        connection.execute(update(AssetPrice).where(AssetPrice.symbol == SYMBOL).values(usd_price=new, updated_at=_now()))
    changed = _now()
    with engine.connect() as connection:
        stored = connection.execute(select(AssetPrice.usd_price).where(AssetPrice.symbol == SYMBOL)).scalar_one()
    s.step("auditor", f"UPDATE asset_prices SET usd_price = {new:f} WHERE symbol = '{SYMBOL}'; COMMIT; read back",
           "committed; the new price is in the database",
           f"committed at {changed.strftime('%H:%M:%S.%f')}; the database holds {stored.normalize():f}")

    # Ask each worker, steered, every half interval, until it serves the new price or the bound.
    deadline = time.monotonic() + BOUND_INTERVALS * INTERVAL_SECONDS
    after: dict[str, dict[str, Any]] = {}
    polls = {w: 0 for w in steer.slots}
    pending = list(steer.slots)
    while pending:
        for worker in list(pending):
            seen = ask(s, steer, worker, carol, "", record=False)
            polls[worker] += 1
            after[worker] = seen
            if seen["status"] != 200 or Decimal(seen["price"]) == new:
                pending.remove(worker)
        if pending and time.monotonic() >= deadline:
            break
        if pending:
            time.sleep(INTERVAL_SECONDS)
    waited = (_now() - changed).total_seconds()
    steer.release_all()
    for worker in steer.slots:
        seen = after[worker]
        s.step(carol.name, f"GET /api/prices on {worker}, every {INTERVAL_SECONDS} s, until it serves {new:f} "
                           f"or {BOUND_INTERVALS} intervals passed ({polls[worker]} asks)",
               f"{SYMBOL} {new:f} USD within an interval or two, from a copy {worker} read after the change",
               f"{SYMBOL} {seen.get('price')} USD, copy read at {_clock(seen.get('refreshed_at'))} by pid "
               f"{seen.get('refreshed_by')}" if seen["status"] == 200 else f"HTTP {seen['status']}")
    return {"master_pid": master, "workers": steer.slots, "symbol": SYMBOL, "old_price": format(old.normalize(), "f"),
            "new_price": format(new, "f"), "stored_price": format(stored.normalize(), "f"), "changed_at": changed.isoformat(),
            "interval_seconds": INTERVAL_SECONDS, "bound_intervals": BOUND_INTERVALS,
            "waited_seconds": round(waited, 3), "before": before, "after": after, "polls": polls}


def judge(observations: dict[str, Any]) -> Judgement:
    before, after = observations["before"], observations["after"]
    workers, master = observations["workers"], observations["master_pid"]
    seen = list(before.values()) + list(after.values())
    if any(r["status"] != 200 for r in seen) or any(r["served_by"] != r["steered_to"] for r in seen):
        return Judgement(INCONCLUSIVE, "a steered read failed or came from another worker: "
                                       + ", ".join(f"HTTP {r['status']} from {r['served_by']}" for r in seen))
    if len({before[w]["pid"] for w in workers}) != 2:
        return Judgement(INCONCLUSIVE, "the two reads did not come from two different worker processes")
    new, symbol = observations["new_price"], observations["symbol"]
    if Decimal(observations["stored_price"]) != Decimal(new):
        return Judgement(LOST, f"the auditor committed {symbol} {new} but read back {observations['stored_price']}")
    changed = dt.datetime.fromisoformat(observations["changed_at"])
    interval = observations["interval_seconds"]
    stale = [w for w in workers if Decimal(after[w]["price"]) != Decimal(new)]
    if stale:
        parts = []
        for w in stale:
            r = after[w]
            read_at = dt.datetime.fromisoformat(r["refreshed_at"]) if r["refreshed_at"] else None
            by = "the gunicorn master, before the fork" if r["refreshed_by"] == master else f"pid {r['refreshed_by']}"
            late = (changed - read_at).total_seconds() if read_at else None
            parts.append(f"worker {r['pid']} still served {symbol} {r['price']} from the copy read at "
                         f"{_clock(r['refreshed_at'])} by {by}"
                         + (f", {late:.1f} s before the change" if late is not None and late > 0 else ""))
        waited = observations["waited_seconds"]
        return Judgement(STALE, "; ".join(parts) + f", {waited / interval:.0f} refresh intervals after {symbol} "
                                f"{new} was committed (the database holds it): a per-process copy no thread "
                                f"refreshes (not the ORM, not the database)")
    own = all(after[w]["refreshed_by"] == after[w]["pid"] for w in workers)
    late = [dt.datetime.fromisoformat(after[w]["refreshed_at"]) > changed for w in workers]
    if not (own and all(late)):
        return Judgement(INCONCLUSIVE, "the new price was served from a copy not read by its own worker after the change")
    return Judgement(FRESH, " and ".join(f"worker {after[w]['pid']} served {symbol} {new} from a copy it read "
                                         f"itself at {_clock(after[w]['refreshed_at'])}" for w in workers)
                     + f", after the change committed at {changed.strftime('%H:%M:%S.%f')}")
