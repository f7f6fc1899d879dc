"""Deterministic seed data: the same seed and size always give the same rows.

Distribution (stated so benchmarks and tests can rely on it):
- 12 wallets on 5 chains, 40 contacts (half with an address, added a day apart from the start);
- events spread over the two years before 2026-01-01 UTC, microsecond timestamps;
- events: 45% incoming, 35% outgoing (+ a fee leg), 20% swaps (an outgoing and an incoming
  swap leg + a fee leg); the legs of one event share its hash and its timestamp, so equal
  timestamps are common (what the keyset tie-breaker is for);
- labels on about 40% of rows, from a fixed list that includes `%` and `_` characters;
- a contact on about 30% of incoming and outgoing rows.
"""

from __future__ import annotations

import datetime as dt
import random
import sys
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Iterator

from sqlalchemy import Engine, delete, insert, text

from lab.models import AssetPrice, Base, Contact, Transaction, Wallet

MIN_SIZE, MAX_SIZE = 100, 1_000_000
DEFAULT_SEED = 42
BATCH_SIZE = 5_000
END = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
SPAN_MICROSECONDS = 2 * 365 * 24 * 3600 * 10**6
CONTACTS_ADDED = END - dt.timedelta(microseconds=SPAN_MICROSECONDS)  # contact n was added n - 1 days later

CHAINS = {"ethereum": "ETH", "bitcoin": "BTC", "solana": "SOL", "polygon": "POL", "arbitrum": "ETH"}
TOKENS = {
    "ethereum": ["ETH", "USDC", "USDT", "DAI", "LINK"],
    "bitcoin": ["BTC"],
    "solana": ["SOL", "USDC", "JUP"],
    "polygon": ["POL", "USDC", "WETH"],
    "arbitrum": ["ETH", "ARB", "USDC"],
}
LABELS = [
    "salary",
    "exchange deposit",
    "exchange withdrawal",
    "rent",
    "gas",
    "NFT mint",
    "staking reward",
    "airdrop",
    "loan repayment",
    "Coffee",
    "100% bonus",
    "fee_rebate",
    "tax 2025",
    "Café",
]


@dataclass(frozen=True)
class SeedData:
    wallets: list[dict[str, Any]]
    contacts: list[dict[str, Any]]


def reference_data(seed: int = DEFAULT_SEED) -> SeedData:
    rng = random.Random(f"{seed}:reference")
    chains = list(CHAINS)
    wallets = [
        {
            "id": n,
            "address": _address(rng, chains[(n - 1) % len(chains)]),
            "chain": chains[(n - 1) % len(chains)],
            "name": f"Wallet {n:02d}",
        }
        for n in range(1, 13)
    ]
    contacts = [
        {"id": n, "name": f"Contact {n:02d}", "address": _address(rng, "ethereum") if n % 2 else None,
         "created_at": CONTACTS_ADDED + dt.timedelta(days=n - 1)}
        for n in range(1, 41)
    ]
    return SeedData(wallets, contacts)


def asset_prices(seed: int = DEFAULT_SEED) -> list[dict[str, Any]]:
    """One USD price per asset the transactions use, all as of the data set's end."""
    rng = random.Random(f"{seed}:prices")
    symbols = sorted({symbol for tokens in TOKENS.values() for symbol in tokens})
    return [{"symbol": symbol, "usd_price": Decimal(rng.randrange(1, 10**8)).scaleb(-4), "updated_at": END}
            for symbol in symbols]


def _address(rng: random.Random, chain: str) -> str:
    if chain == "bitcoin":
        return "bc1q" + "".join(rng.choice("023456789acdefghjklmnpqrstuvwxyz") for _ in range(38))
    if chain == "solana":
        return "".join(rng.choice("123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz") for _ in range(44))
    return "0x" + f"{rng.getrandbits(160):040x}"


def transactions(size: int, seed: int = DEFAULT_SEED) -> Iterator[dict[str, Any]]:
    """Yield `size` transaction rows (dicts with explicit ids 1..size), deterministically."""
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise ValueError(f"size must be between {MIN_SIZE} and {MAX_SIZE}, not {size}")
    rng = random.Random(f"{seed}:transactions")
    wallets = reference_data(seed).wallets
    next_id = 1
    while next_id <= size:
        wallet = rng.choice(wallets)
        chain = wallet["chain"]
        occurred_at = END - dt.timedelta(microseconds=rng.randrange(SPAN_MICROSECONDS))
        tx_hash = "0x" + f"{rng.getrandbits(256):064x}"
        roll = rng.random()
        if roll < 0.45:
            legs = [("in", rng.choice(TOKENS[chain]))]
        elif roll < 0.80:
            legs = [("out", rng.choice(TOKENS[chain])), ("fee", CHAINS[chain])]
        else:
            sold, bought = rng.sample(TOKENS[chain], 2) if len(TOKENS[chain]) > 1 else (CHAINS[chain],) * 2
            legs = [("swap", sold), ("swap", bought), ("fee", CHAINS[chain])]
            if sold == bought:  # a chain with one asset cannot swap: keep the sale only
                legs = [legs[0], legs[2]]
        for leg_type, asset in legs:
            if next_id > size:
                return
            yield {
                "id": next_id,
                "tx_hash": tx_hash,
                "wallet_id": wallet["id"],
                "type": leg_type,
                "asset_symbol": asset,
                "amount": _amount(rng, leg_type),
                "occurred_at": occurred_at,
                "label": rng.choice(LABELS) if rng.random() < 0.40 else None,
                "contact_id": rng.randint(1, 40) if leg_type in ("in", "out") and rng.random() < 0.30 else None,
                "version": 1,
            }
            next_id += 1


def _amount(rng: random.Random, leg_type: str) -> Decimal:
    digits = rng.randrange(10**12, 10**15) if leg_type == "fee" else rng.randrange(10**15, 10**22)
    return Decimal(digits).scaleb(-18)


def create_schema(engine: Engine, drop_first: bool = False) -> None:
    if drop_first:
        Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)


def seed(engine: Engine, size: int, seed: int = DEFAULT_SEED, progress: bool | None = None) -> float:
    """Replace all rows with the deterministic data set; return the seconds it took."""
    progress = size >= 50_000 if progress is None else progress
    started = time.perf_counter()
    reference = reference_data(seed)
    with engine.begin() as connection:
        for model in (Transaction, Contact, Wallet, AssetPrice):
            connection.execute(delete(model))
        connection.execute(insert(AssetPrice), asset_prices(seed))
        connection.execute(insert(Wallet), reference.wallets)
        connection.execute(insert(Contact), reference.contacts)
        batch: list[dict[str, Any]] = []
        done = 0
        for row in transactions(size, seed):
            batch.append(row)
            if len(batch) == BATCH_SIZE:
                connection.execute(insert(Transaction), batch)
                done += len(batch)
                batch.clear()
                if progress:
                    _draw_progress(done, size, started)
        if batch:
            connection.execute(insert(Transaction), batch)
            done += len(batch)
        if connection.dialect.name == "postgresql":
            # Explicit ids do not advance the sequences: make the next inserted id follow ours.
            for table in ("wallets", "contacts", "transactions"):
                connection.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
                )
    if progress:
        _draw_progress(done, size, started)
        print(file=sys.stderr)
    return time.perf_counter() - started


def _draw_progress(done: int, size: int, started: float) -> None:
    width = 40
    filled = width * done // size
    rate = done / max(time.perf_counter() - started, 1e-9)
    sys.stderr.write(f"\rseeding [{'#' * filled}{'.' * (width - filled)}] {done:,}/{size:,} rows, {rate:,.0f} rows/s")
    sys.stderr.flush()
