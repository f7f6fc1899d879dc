"""`make jupyter`: JupyterLab from the lock on 127.0.0.1, with the lab's kernel, on the overview.

    python -m notebooks.jupyter [--port 8888]

The server is this virtualenv's JupyterLab; its kernel is this virtualenv's Python (ipykernel
from the lock), started with the server's environment: the `LAB_TEST_*` URLs pass through (the
Makefile exports them), so cells on PostgreSQL and MariaDB run where the servers answer, and
`PYTHONPATH` holds the repository, so `from reporting import notebook` imports from the notebooks'
folder. The server binds 127.0.0.1 only and asks for a token, printed in the URL once the
server answers. Ctrl-C (or SIGTERM) stops it.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
OVERVIEW = "notebooks/00_overview.ipynb"
READY_TIMEOUT_SECONDS = 60.0


def command(port: int, token: str) -> list[str]:
    # As root (these machines, CI) JupyterLab refuses to start without --allow-root.
    as_root = ["--allow-root"] if os.geteuid() == 0 else []
    return [sys.executable, "-m", "jupyterlab", "--no-browser", "--ip=127.0.0.1", f"--port={port}",
            "--ServerApp.port_retries=0", f"--ServerApp.root_dir={REPO_ROOT}", *as_root,
            f"--IdentityProvider.token={token}", f"--ServerApp.default_url=/lab/tree/{OVERVIEW}"]


def environment() -> dict[str, str]:
    path = os.pathsep.join(p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path}


def answers(port: int, token: str) -> bool:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/api/status", headers={"Authorization": f"token {token}"})
    try:
        with urllib.request.urlopen(request, timeout=2) as reply:
            return bool(reply.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def wait_until_ready(server: subprocess.Popen[bytes], port: int, token: str) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_SECONDS
    while not answers(port, token):
        if server.poll() is not None:
            raise SystemExit(f"JupyterLab exited with {server.returncode} before answering (is port {port} free?)")
        if time.monotonic() > deadline:
            raise SystemExit(f"JupyterLab did not answer on 127.0.0.1:{port} within {READY_TIMEOUT_SECONDS:.0f} s")
        time.sleep(0.2)


def stop(server: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group (the server and the kernels it started), then SIGKILL."""
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m notebooks.jupyter", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8888)
    args = parser.parse_args(argv)
    token = secrets.token_hex(24)
    server = subprocess.Popen(command(args.port, token), cwd=REPO_ROOT, env=environment(), start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # -> finally: the server is stopped
    try:
        wait_until_ready(server, args.port, token)
        print(f"JupyterLab is ready: http://127.0.0.1:{args.port}/lab/tree/{OVERVIEW}?token={token}", flush=True)
        print("Ctrl-C stops it.", flush=True)
        return server.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        stop(server)


if __name__ == "__main__":
    sys.exit(main())
