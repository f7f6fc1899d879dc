"""Asset prices kept in memory per process and refreshed from the database by a thread.

A reference table read on many requests and allowed to be a few seconds old is often cached
like this: a dict in the process, replaced every `PRICES_REFRESH_SECONDS` by a background
thread. A thread belongs to the process that started it: `os.fork()` copies the memory (the
dict) into the child but only the thread that called fork runs there (Python's os.fork docs).
Under `gunicorn --preload` the app is created in the master, which then forks the workers, so
a refresher started in create_app runs in the master only and every worker serves the copy it
inherited, for ever. `ensure_running()` (called by the route) starts the refresher in the
process that serves, once per process id: every worker starts its own after the fork, and a
worker gunicorn restarts (a new pid) starts a new one.

Each refresh runs on an engine of its own with NullPool: a short transaction on a new
connection, closed at its end, so no pooled connection is ever carried across a fork (that is
another cause, pool_across_fork) whether the refresher ran in the master or not. The thread is
a daemon (it never holds a worker's exit) and `stop()` ends it between refreshes.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
from typing import Any, Mapping

from sqlalchemy import create_engine, select
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session
from sqlalchemy.pool import NullPool

from lab.engine import engine_options
from lab.models import AssetPrice

DEFAULT_REFRESH_SECONDS = 60.0
REFRESH_SECONDS_ENV = "LAB_PRICES_REFRESH_SECONDS"  # the lab sets it short (the scenario: 0.5 s)
THREAD_NAME = "asset-prices-refresher"
FIRST_READ_TIMEOUT_SECONDS = 10.0
log = logging.getLogger(__name__)


def refresh_seconds(config: Mapping[str, Any]) -> float:
    """`PRICES_REFRESH_SECONDS` from the app's config, else the environment, else a minute."""
    value = config.get("PRICES_REFRESH_SECONDS") or os.environ.get(REFRESH_SECONDS_ENV) or DEFAULT_REFRESH_SECONDS
    seconds = float(value)
    if not seconds > 0:
        raise ValueError(f"PRICES_REFRESH_SECONDS must be a positive number of seconds, not {value!r}")
    return seconds


class PriceTable:
    """The prices this process serves, and the refresher that keeps them current."""

    def __init__(self, url: str, interval: float) -> None:
        self.url, self.interval = url, interval
        self.prices: dict[str, str] = {}
        self.refreshed_at: dt.datetime | None = None  # when the copy was read (UTC), None before the first read
        self.refreshed_by: int | None = None  # the pid that read it
        self.refreshes = 0  # in this process
        self._engine: Engine | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._started_in: int | None = None  # the pid whose refresher is (or was) running

    def engine(self) -> Engine:
        if self._engine is None:
            connect_args = engine_options(self.url).get("connect_args", {})
            self._engine = create_engine(self.url, poolclass=NullPool, connect_args=connect_args)
        return self._engine

    def refresh(self) -> None:
        """Read every price in one short transaction on a new connection; replace the copy."""
        with Session(self.engine()) as session, session.begin():
            rows = session.execute(select(AssetPrice.symbol, AssetPrice.usd_price)).all()
        read_at = dt.datetime.now(dt.timezone.utc)
        self.prices = {symbol: format(price.normalize(), "f") for symbol, price in sorted(rows)}  # one assignment: readers see old or new
        self.refreshed_at, self.refreshed_by = read_at, os.getpid()
        self.refreshes += 1

    def start(self) -> None:
        """Start the refresher thread in this process; return once its first read is done (or failed)."""
        with self._lock:
            self._start()

    def ensure_running(self) -> None:
        """Start the refresher unless it runs in this process (in a forked child it does not)."""
        if not self._running_here():
            with self._lock:
                if not self._running_here():
                    self._start()

    def _running_here(self) -> bool:
        return self._started_in == os.getpid() and self._thread is not None and self._thread.is_alive()

    def _start(self) -> None:
        # The first read runs in the thread too (no request's SQL: a request only ever reads the
        # copy); the caller waits for it, bounded, so the first answer has prices.
        self._started_in, self._stop, first = os.getpid(), threading.Event(), threading.Event()
        self._thread = threading.Thread(target=self._run, args=(self._stop, first), name=THREAD_NAME, daemon=True)
        self._thread.start()
        first.wait(FIRST_READ_TIMEOUT_SECONDS)

    def _run(self, stop: threading.Event, first: threading.Event) -> None:
        while True:
            try:
                self.refresh()
            except Exception:  # keep serving the last copy; say so, and try at the next interval
                log.exception("asset prices: a refresh failed")
            first.set()
            if stop.wait(self.interval):
                return

    def stop(self) -> None:
        """End the refresher (between two refreshes) and wait for it."""
        self._stop.set()
        thread = self._thread
        if thread is not None and thread.is_alive() and thread is not threading.current_thread():
            thread.join(timeout=self.interval + 5)
        if self._engine is not None:
            self._engine.dispose()

    def served(self) -> dict[str, Any]:
        """The copy this process serves: the prices, when they were read and by which process."""
        return {"prices": self.prices,
                "refreshed_at": self.refreshed_at.isoformat() if self.refreshed_at else None,
                "refreshed_by": self.refreshed_by, "served_by": os.getpid(), "interval_seconds": self.interval}
