"""Run an app variant under real gunicorn on 127.0.0.1 and talk to it as named actors.

The server is always stopped by whoever started it: `GunicornServer` is a context manager,
and the scenario runner also stops any server left running when a scenario fails.
"""

from __future__ import annotations

import http.client
import http.cookies
import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from lab.engine import REPO_ROOT

READY_TIMEOUT_SECONDS = 20.0
GRACEFUL_TIMEOUT_SECONDS = 2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class Reply:
    """One HTTP exchange as an actor saw it."""

    status: int
    headers: dict[str, str]
    body: bytes
    sent_at: float  # time.monotonic() when the request was sent
    received_at: float

    @property
    def served_by(self) -> str:
        return self.headers.get("x-served-by", "?")

    @property
    def db_conn(self) -> str:
        return self.headers.get("x-db-conn", "?")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class Actor:
    """A named user of the app; every request opens its own connection (no keep-alive),
    so the server's choice of worker and thread is never inherited from a previous step.
    Like a browser, it keeps the cookies the app sets (name -> value, one host, no expiry
    but deletion) and sends them back; `clear_cookies()` is the user clearing them."""

    name: str
    port: int
    timeout: float = 15.0
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (e.g. X-User)
    cookies: dict[str, str] = field(default_factory=dict)

    def clear_cookies(self) -> None:
        self.cookies.clear()

    def _keep_cookies(self, set_cookies: list[str]) -> None:
        for header in set_cookies:
            jar = http.cookies.SimpleCookie()
            jar.load(header)
            for name, morsel in jar.items():
                gone = morsel["max-age"] == "0" or morsel["expires"].startswith("Thu, 01 Jan 1970")
                if gone:
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def request(self, method: str, path: str, *, json_body: Any = None, form: dict[str, str] | None = None,
                params: dict[str, Any] | None = None) -> Reply:
        if params:
            path = f"{path}?{urlencode(params, doseq=True)}"
        headers = {"X-Lab-Actor": self.name, "Connection": "close", **self.headers}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{name}={value}" for name, value in self.cookies.items())
        body: bytes | None = None
        if json_body is not None:
            body, headers["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif form is not None:
            body, headers["Content-Type"] = urlencode(form).encode(), "application/x-www-form-urlencoded"
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        sent_at = time.monotonic()
        try:
            connection.request(method, path, body=body, headers=headers)
            response = connection.getresponse()
            data = response.read()
            self._keep_cookies(response.msg.get_all("Set-Cookie") or [])
            return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data,
                         sent_at, time.monotonic())
        finally:
            connection.close()

    def get(self, path: str, **params: Any) -> Reply:
        return self.request("GET", path, params=params or None)

    def post_json(self, path: str, body: Any) -> Reply:
        return self.request("POST", path, json_body=body)


@dataclass
class GunicornServer:
    """`gunicorn <app_spec>` on a free 127.0.0.1 port, in lab mode, with the given shape."""

    app_spec: str  # e.g. "broken.uncommitted:create_app()"
    env: dict[str, str]
    log_path: Path
    workers: int = 1
    threads: int = 1
    preload: bool = False
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    def command(self) -> list[str]:
        command = [
            sys.executable, "-m", "gunicorn",
            "--bind", f"127.0.0.1:{self.port}",
            "--workers", str(self.workers),
            "--threads", str(self.threads),
            "--worker-class", "gthread" if self.threads > 1 else "sync",
            "--graceful-timeout", str(GRACEFUL_TIMEOUT_SECONDS),
            "--timeout", "60",
            "--log-level", "info",
            # Several servers may run at once (tests in parallel): no shared control socket.
            "--no-control-socket",
        ]
        if self.preload:
            command.append("--preload")
        return command + [self.app_spec]

    def start(self) -> "GunicornServer":
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            self.command(), cwd=REPO_ROOT, env={**os.environ, **self.env, "LAB_MODE": "1"},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        log.close()
        self._wait_until_ready()
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {self.process.returncode}; log ends:\n{self.log_tail()}")
            booted = self.log_path.read_text(errors="replace").count("Booting worker")
            if booted >= self.workers and self.answers():
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"gunicorn not ready after {READY_TIMEOUT_SECONDS} s; log ends:\n{self.log_tail()}")

    def log_tail(self, lines: int = 15) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def answers(self) -> bool:
        """Does its `/_lab/ping` answer 200 now?"""
        try:
            return Actor("harness", self.port, timeout=2).get("/_lab/ping").status == 200
        except OSError:
            return False

    def worker_pids(self) -> list[int]:
        text = self.log_path.read_text(errors="replace")
        return [int(line.rsplit(":", 1)[1]) for line in text.splitlines() if "Booting worker with pid:" in line]

    def stop(self) -> None:
        """SIGTERM to the master (it stops its workers), SIGKILL to the group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=GRACEFUL_TIMEOUT_SECONDS + 5)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=5)

    def __enter__(self) -> "GunicornServer":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()
