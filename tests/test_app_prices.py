"""The asset prices the app keeps in memory: served, refreshed, and refreshed in every worker.

lab/prices.py keeps a copy per process, refreshed by a thread every PRICES_REFRESH_SECONDS;
the fixed app starts that thread in the process that serves (lazily, per process id). Both
sides of the fork are asserted under `gunicorn --preload`: the fixed app's worker, and the one
gunicorn starts after the first is killed, each serve a copy they refreshed themselves, while
broken/prefork_refresher's workers serve the master's copy of the moment each was forked, for ever.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import threading
import time
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask
from sqlalchemy import Engine, create_engine, update

from lab import prices, seed
from lab.engine import configure_engine, engine_options
from lab.harness.server import Actor, GunicornServer
from lab.models import AssetPrice

INTERVAL = 0.2


def set_price(engine: Engine, symbol: str, price: Decimal) -> dt.datetime:
    with engine.begin() as connection:
        connection.execute(update(AssetPrice).where(AssetPrice.symbol == symbol).values(
            usd_price=price, updated_at=dt.datetime.now(dt.timezone.utc)))
    return dt.datetime.now(dt.timezone.utc)


def wait_for(ask: Callable[[], dict[str, Any]], done: Callable[[dict[str, Any]], bool], seconds: float) -> dict[str, Any]:
    """Ask until `done` or the bound; return the last answer (the caller asserts on it)."""
    deadline = time.monotonic() + seconds
    body = ask()
    while not done(body) and time.monotonic() < deadline:
        time.sleep(INTERVAL / 2)
        body = ask()
    return body


def test_the_prices_are_served_and_refreshed_from_the_database(app: Flask, client: Any, engine: Engine) -> None:
    app.extensions["asset_prices"].interval = INTERVAL
    first = client.get("/api/prices").get_json()
    assert first["prices"] == {p["symbol"]: format(p["usd_price"].normalize(), "f") for p in seed.asset_prices()}
    assert first["refreshed_by"] == first["served_by"] == os.getpid() and first["refreshed_at"]
    changed = set_price(engine, "BTC", Decimal("123.45"))
    body = wait_for(lambda: client.get("/api/prices").get_json(), lambda b: b["prices"]["BTC"] == "123.45", 5)
    assert body["prices"]["BTC"] == "123.45"
    assert dt.datetime.fromisoformat(body["refreshed_at"]) > changed
    app.extensions["asset_prices"].stop()
    assert not any(t.name == prices.THREAD_NAME and t.is_alive() for t in threading.enumerate())


def test_the_interval_must_be_a_positive_number_of_seconds() -> None:
    assert prices.refresh_seconds({"PRICES_REFRESH_SECONDS": "2.5"}) == 2.5
    for bad in ("0", "-1"):
        with pytest.raises(ValueError, match="PRICES_REFRESH_SECONDS"):
            prices.refresh_seconds({"PRICES_REFRESH_SECONDS": bad})


@pytest.mark.parametrize("module", ["fixed.app", "broken.prefork_refresher"])
def test_under_preload_each_worker_refreshes_its_own_copy_even_after_a_restart(tmp_path: Path, module: str) -> None:
    url = f"sqlite:///{tmp_path / 'prices.sqlite'}"
    engine = configure_engine(create_engine(url, **engine_options(url)))
    seed.create_schema(engine)
    seed.seed(engine, seed.MIN_SIZE)
    (tmp_path / "control").mkdir()
    env = {"LAB_DATABASE_URL": url, "LAB_TXLOG": str(tmp_path / "txlog.jsonl"),
           "LAB_CONTROL_DIR": str(tmp_path / "control"), "LAB_PRICES_REFRESH_SECONDS": str(INTERVAL)}
    with GunicornServer(f"{module}:create_app()", env, tmp_path / "gunicorn.log", workers=1, preload=True) as server:
        actor = Actor("reader", server.port)
        ask = lambda: actor.get("/api/prices").json()  # noqa: E731
        master = server.process.pid if server.process else 0
        first = ask()
        changed = set_price(engine, "ETH", Decimal("1000.5"))
        after = wait_for(ask, lambda b: b["prices"]["ETH"] == "1000.5", 8 * INTERVAL)
        os.kill(first["served_by"], signal.SIGKILL)  # gunicorn's master starts a new worker
        restarted = wait_for(lambda: _answer(actor), lambda b: b.get("served_by") not in (None, first["served_by"]), 20)
        changed_again = set_price(engine, "ETH", Decimal("2000.25"))
        again = wait_for(ask, lambda b: b["prices"]["ETH"] == "2000.25", 8 * INTERVAL)
    engine.dispose()
    assert restarted["served_by"] != first["served_by"]
    if module == "fixed.app":
        assert first["refreshed_by"] == first["served_by"] != master
        assert after["prices"]["ETH"] == "1000.5" and dt.datetime.fromisoformat(after["refreshed_at"]) > changed
        assert again["refreshed_by"] == again["served_by"] == restarted["served_by"]
        assert again["prices"]["ETH"] == "2000.25" and dt.datetime.fromisoformat(again["refreshed_at"]) > changed_again
    else:  # each worker serves the master's copy of the moment it was forked, never refreshed after
        assert first["refreshed_by"] == after["refreshed_by"] == again["refreshed_by"] == master
        assert after["prices"]["ETH"] == first["prices"]["ETH"] != "1000.5"
        assert again["prices"]["ETH"] == "1000.5"  # the master's refresher had read it before the second fork
        assert dt.datetime.fromisoformat(again["refreshed_at"]) < changed_again


def _answer(actor: Actor) -> dict[str, Any]:
    try:
        reply = actor.get("/api/prices")
    except OSError:
        return {}
    return reply.json() if reply.status == 200 else {}
