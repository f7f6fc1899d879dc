"""A real browser for the scenarios: Debian's headless Chromium under Selenium (the lock's).

Each `Browser` starts Chromium with a fresh, empty profile (so nothing cached by an earlier run
can decide this one) and always stops it again, with its profile. It reads the live page as a
user sees it (the rows its script drew in the DOM) and keeps Chromium's own account of every
network request (the DevTools performance log, `goog:loggingPrefs`): whether a response came
from the HTTP cache (`fromDiskCache`, `requestServedFromCache`) or from the server.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
INSTALL = "apt-get install -y chromium chromium-driver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--window-size=1300,1000"]
LOAD_TIMEOUT_SECONDS = 10


class Browser:
    """One Chromium with its own profile; a context manager that always quits it."""

    def __init__(self) -> None:
        missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
        if missing:
            raise RuntimeError(f"{' and '.join(missing)} missing: run `{INSTALL}`")
        self.driver: Any = None
        self.profile = ""

    def start(self) -> "Browser":
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        self.profile = tempfile.mkdtemp(prefix="lab-chromium-")
        options = webdriver.ChromeOptions()
        options.binary_location = str(CHROMIUM)
        for flag in [*FLAGS, f"--user-data-dir={self.profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
        self.driver = webdriver.Chrome(service=Service(executable_path=str(CHROMEDRIVER)), options=options)
        return self

    def stop(self) -> None:
        try:
            if self.driver is not None:
                self.driver.quit()
        finally:
            self.driver = None
            if self.profile:
                shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # ---- what a user does -------------------------------------------------------------

    def open(self, url: str) -> list[dict[str, Any]]:
        """Navigate to `url` (typed in, or a link followed) and return the rows drawn."""
        self.network()  # forget what came before: the log then tells about this load only
        self.driver.get(url)
        return self.rows()

    def reload(self) -> list[dict[str, Any]]:
        """Press reload (WebDriver's Refresh: a normal reload, not a shift-reload)."""
        self.network()
        self.driver.refresh()
        return self.rows()

    def rows(self) -> list[dict[str, Any]]:
        """The rows of the live page once its script has drawn them: id, version and label."""
        from selenium.webdriver.support.ui import WebDriverWait

        WebDriverWait(self.driver, LOAD_TIMEOUT_SECONDS).until(
            lambda d: d.execute_script("var s = document.getElementById('status');"
                                       "return s && s.dataset.state !== 'loading';"))
        state = self.driver.execute_script("return document.getElementById('status').dataset.state;")
        if state != "loaded":
            raise RuntimeError(f"the live page did not load its rows: {state}")
        return self.driver.execute_script(
            "return Array.from(document.querySelectorAll('#rows tr')).map(function (tr) {"
            "  return {id: Number(tr.dataset.id), version: Number(tr.dataset.version),"
            "          label: tr.querySelector('td.label').textContent || null}; });")

    # ---- what Chromium says about its requests ----------------------------------------

    def network(self, path: str = "") -> list[dict[str, Any]]:
        """The responses received since the last call (optionally only URLs containing `path`):
        url, status, and whether Chromium took it from its HTTP cache instead of the server."""
        served_from_cache: set[str] = set()
        responses: list[dict[str, Any]] = []
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            params = message.get("params", {})
            if message.get("method") == "Network.requestServedFromCache":
                served_from_cache.add(params.get("requestId", ""))
            elif message.get("method") == "Network.responseReceived" and params.get("type") in ("Fetch", "Document"):
                response = params["response"]
                responses.append({"request_id": params.get("requestId", ""), "url": response["url"],
                                  "type": params.get("type"), "status": response["status"],
                                  "from_disk_cache": bool(response.get("fromDiskCache")),
                                  "cache_control": {k.lower(): v for k, v in response.get("headers", {}).items()}.get("cache-control")})
        for response in responses:
            response["from_cache"] = response["from_disk_cache"] or response.pop("request_id") in served_from_cache
            response.pop("request_id", None)
        return [r for r in responses if path in r["url"]]
