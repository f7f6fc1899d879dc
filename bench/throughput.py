"""Requests per second of the list pages against the trivial endpoint, on one gunicorn server.

The load generator is the benchmark's own: `connections` keep-alive HTTP/1.1 connections on
127.0.0.1, each sending its next GET as soon as the previous answer is read (a closed loop),
in one asyncio loop of this process. Every answer must be a 200 with a Content-Length body;
anything else is counted as an error. Each path is loaded in turn for `seconds`, `rounds`
times (ping, JSON, HTML, ping, ...), so a burst of load elsewhere on the machine hits them
alike; the figure of a path is all its answers over all its seconds.

The ratio list / ping says what share of the server's capacity for a request that does
nothing is left when the request reads and renders a page: 1.0 would be a free page.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

CONNECTIONS = 16


class BadReply(Exception):
    """An answer that is not a complete 200."""


@dataclass
class PathLoad:
    path: str
    requests: int = 0
    errors: list[str] = field(default_factory=list)
    seconds: float = 0.0
    bytes: int = 0

    @property
    def requests_per_second(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "requests": self.requests, "seconds": round(self.seconds, 3),
                "requests_per_second": round(self.requests_per_second, 1), "errors": len(self.errors),
                "first_errors": self.errors[:3], "bytes_per_reply": self.bytes // self.requests if self.requests else 0}


async def _read_reply(reader: asyncio.StreamReader) -> tuple[int, int, bool]:
    """Status, body length and whether the server keeps the connection open."""
    status_line = await reader.readline()
    if not status_line:
        raise BadReply("connection closed by the server")
    status = int(status_line.split()[1])
    length, keep_alive = None, True
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"connection" and value.strip().lower() == b"close":
            keep_alive = False
    if length is None:
        raise BadReply(f"HTTP {status} without Content-Length")
    await reader.readexactly(length)
    return status, length, keep_alive


async def _client(port: int, request: bytes, deadline: float, load: PathLoad) -> None:
    reader = writer = None
    try:
        while time.perf_counter() < deadline:
            if writer is None:
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
            assert reader is not None
            writer.write(request)
            try:
                status, length, keep_alive = await _read_reply(reader)
            except (BadReply, OSError, asyncio.IncompleteReadError, ValueError, IndexError) as error:
                load.errors.append(f"{type(error).__name__}: {error}")
                writer.close()
                reader = writer = None
                continue
            if status == 200:
                load.requests += 1
                load.bytes += length
            else:
                load.errors.append(f"HTTP {status}")
            if not keep_alive:
                writer.close()
                reader = writer = None
    finally:
        if writer is not None:
            writer.close()


async def _load(port: int, path: str, seconds: float, connections: int, load: PathLoad) -> None:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Lab-Actor: bench\r\n\r\n").encode()
    started = time.perf_counter()
    deadline = started + seconds
    await asyncio.gather(*(_client(port, request, deadline, load) for _ in range(connections)))
    load.seconds += time.perf_counter() - started


def measure(port: int, paths: dict[str, str], seconds: float = 3.0, rounds: int = 3,
            warmup_seconds: float = 1.0, connections: int = CONNECTIONS) -> dict[str, Any]:
    """Requests/s of each named path, loaded in turn; `ping` must be one of them."""
    loads = {name: PathLoad(path) for name, path in paths.items()}
    for path in paths.values():  # warm every worker's pool, caches and templates
        asyncio.run(_load(port, path, warmup_seconds, connections, PathLoad(path)))
    for _ in range(rounds):
        for name, path in paths.items():
            asyncio.run(_load(port, path, seconds, connections, loads[name]))
    ping = loads["ping"].requests_per_second
    return {
        "connections": connections, "seconds_per_round": seconds, "rounds": rounds,
        "paths": {name: load.as_dict() for name, load in loads.items()},
        "to_ping": {name: round(load.requests_per_second / ping, 3) if ping else None
                    for name, load in loads.items() if name != "ping"},
    }
