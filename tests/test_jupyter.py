"""`make jupyter` opens the walkthroughs: JupyterLab from the lock, headless on a free port,
shows the overview in real headless Chromium, and the lab's kernel, started by the server for
that notebook, runs its first code cell (which imports the lab and names the backends the
LAB_TEST_* variables reach); then the server is stopped with everything it started."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from lab import databases
from lab.harness.server import free_port
from notebooks.build import build
from tests.chromium import chromium

ROOT = Path(__file__).resolve().parent.parent


class Lab:
    def __init__(self, port: int, url: str, process: subprocess.Popen[str]) -> None:
        self.port, self.url, self.process = port, url, process
        self.token = url.split("token=", 1)[1]

    def api(self, method: str, path: str, body: Any = None) -> Any:
        request = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", method=method,
                                         data=None if body is None else json.dumps(body).encode(),
                                         headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as reply:
            text = reply.read()
            return json.loads(text) if text else None


@pytest.fixture
def jupyter(tmp_path: Path) -> Iterator[Lab]:
    port = free_port()
    env = {**os.environ, "JUPYTER_CONFIG_DIR": str(tmp_path / "config"), "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
           "JUPYTERLAB_WORKSPACES_DIR": str(tmp_path / "workspaces")}
    process = subprocess.Popen([sys.executable, "-m", "notebooks.jupyter", "--port", str(port)], cwd=ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=open(tmp_path / "jupyter.log", "w"), text=True,
                               start_new_session=True)
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []], daemon=True).start()
    try:
        url, deadline = "", time.monotonic() + 90
        while not url:
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"make jupyter printed no URL (exit code {process.poll()}):\n"
                            + (tmp_path / "jupyter.log").read_text()[-3000:])
            try:
                line = lines.get(timeout=0.5)
            except queue.Empty:
                continue
            if line.startswith("JupyterLab is ready: "):
                url = line.split(": ", 1)[1].strip()
        assert url.startswith(f"http://127.0.0.1:{port}/lab/tree/notebooks/00_overview.ipynb?token="), url
        yield Lab(port, url, process)
    finally:
        process.terminate()  # the launcher stops the server's process group, kernels included
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, 9)
            process.wait()


def run_in_kernel(lab: Lab, kernel_id: str, session_id: str, code: str) -> str:
    """Execute `code` over the server's kernel websocket; the stdout it printed."""
    from tornado.ioloop import IOLoop
    from tornado.websocket import websocket_connect

    async def execute() -> str:
        socket = await websocket_connect(
            f"ws://127.0.0.1:{lab.port}/api/kernels/{kernel_id}/channels?token={lab.token}&session_id={session_id}")
        msg_id = uuid.uuid4().hex
        socket.write_message(json.dumps({
            "header": {"msg_id": msg_id, "username": "test", "session": session_id, "msg_type": "execute_request",
                       "version": "5.3"},
            "parent_header": {}, "metadata": {}, "channel": "shell",
            "content": {"code": code, "silent": False, "store_history": True, "user_expressions": {},
                        "allow_stdin": False, "stop_on_error": True}}))
        printed, status = [], None
        while status != "idle":
            raw = await socket.read_message()
            assert raw is not None, "the kernel's websocket closed"
            message = json.loads(raw)
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["header"]["msg_type"]
            if kind == "stream":
                printed.append(message["content"]["text"])
            elif kind == "error":
                raise AssertionError("\n".join(message["content"]["traceback"]))
            elif kind == "status":
                status = message["content"]["execution_state"]
        socket.close()
        return "".join(printed)

    return IOLoop.current().run_sync(execute, timeout=120)


def test_make_jupyter_opens_the_overview_and_runs_its_first_cell(jupyter: Lab) -> None:
    overview = build("00_overview")
    title = overview.cells[0].source.splitlines()[0].lstrip("# ").strip()
    first_code = next(cell.source for cell in overview.cells if cell.cell_type == "code")

    with chromium() as browser:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as seen
        from selenium.webdriver.support.ui import WebDriverWait

        browser.get(jupyter.url)
        heading = WebDriverWait(browser, 120).until(seen.visibility_of_element_located(
            (By.CSS_SELECTOR, ".jp-Notebook .jp-MarkdownCell h1")))
        assert title in heading.text, heading.text
        assert browser.title.startswith("00_overview") and "JupyterLab" in browser.title, browser.title

    session = jupyter.api("POST", "/api/sessions", {"path": "notebooks/00_overview.ipynb", "type": "notebook",
                                                     "name": "00_overview.ipynb", "kernel": {"name": "python3"}})
    kernel = session["kernel"]["id"]
    printed = run_in_kernel(jupyter, kernel, session["id"], first_code)
    wanted = ["sqlite", *sorted(databases.required_backends() - {"sqlite"}, key=databases.BACKENDS.index)]
    line = next((l for l in printed.splitlines() if l.startswith("backends in this run:")), "")
    assert line, printed
    assert all(backend in line for backend in wanted), (line, wanted)
    # The kernel is the lab's virtualenv, started in the notebook's folder.
    where = run_in_kernel(jupyter, kernel, session["id"], "import os, sys; print(sys.prefix); print(os.getcwd())")
    assert where.splitlines() == [sys.prefix, str(ROOT / "notebooks")], where
    jupyter.api("DELETE", f"/api/sessions/{session['id']}")
