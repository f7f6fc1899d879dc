"""A person's flow through an app: named steps, one client for the test client and for HTTP.

A driver's steps call `client.get(...)` / `client.post(...)` and get a `Page` back (status,
text, headers); the same steps run in Flask's test client and against gunicorn on 127.0.0.1
(cookies kept, redirects not followed, so a step sees what a browser would be told). The
findings each step caused are the lines the doctor appended to its STALE_DOCTOR_FILE while the
step ran: that file is shared by every gunicorn worker (O_APPEND lines), so it is the one
record for both ways of serving.
"""

from __future__ import annotations

import http.cookiejar
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from stale_doctor.findings import read_file


@dataclass
class Page:
    status: int
    text: str
    headers: dict[str, str]

    def json(self) -> Any:
        return json.loads(self.text)

    def field_value(self, name: str) -> str | None:
        """The value of an <input name=...> in the page (a CSRF token, a form's current value)."""
        for tag in re.findall(r"<input[^>]*>", self.text):
            if re.search(rf'name=["\']{re.escape(name)}["\']', tag):
                found = re.search(r'value=["\']([^"\']*)["\']', tag)
                return found.group(1) if found else ""
        return None


class TestClient:
    """Flask's test client, one per flow (its cookie jar is the person's browser)."""

    kind = "test client"

    def __init__(self, app: Any) -> None:
        self._client = app.test_client()

    def request(self, method: str, path: str, *, data: Any = None, json_body: Any = None,
                headers: dict[str, str] | None = None) -> Page:
        response = self._client.open(path, method=method, data=data, json=json_body, headers=headers or {})
        try:
            return Page(response.status_code, response.get_data(as_text=True), dict(response.headers))
        finally:
            response.close()

    def get(self, path: str, **kw: Any) -> Page:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Page:
        return self.request("POST", path, **kw)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class HttpClient:
    """The same calls over HTTP to a server on 127.0.0.1, with a cookie jar and no redirects."""

    kind = "gunicorn"

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        if not base_url.startswith(("http://127.0.0.1:", "http://localhost:")):
            raise ValueError(f"the field drives local servers only, not {base_url}")
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                                   _NoRedirect())

    def request(self, method: str, path: str, *, data: Any = None, json_body: Any = None,
                headers: dict[str, str] | None = None) -> Page:
        body, sent = None, dict(headers or {})
        if json_body is not None:
            body, sent["Content-Type"] = json.dumps(json_body).encode(), "application/json"
        elif data is not None:
            body = urllib.parse.urlencode(data, doseq=True).encode()
            sent["Content-Type"] = "application/x-www-form-urlencoded"
        req = urllib.request.Request(self.base_url + path, data=body, method=method, headers=sent)
        try:
            with self._opener.open(req, timeout=self.timeout) as response:
                return Page(response.status, response.read().decode("utf-8", "replace"), dict(response.headers))
        except urllib.error.HTTPError as error:
            return Page(error.code, error.read().decode("utf-8", "replace"), dict(error.headers))

    def get(self, path: str, **kw: Any) -> Page:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> Page:
        return self.request("POST", path, **kw)


Client = TestClient | HttpClient


@dataclass
class Step:
    """One thing a person does: `run(client)` returns the page it ended on."""

    name: str
    run: Callable[[Client], Page]
    ok: tuple[int, ...] = (200, 201, 204, 302, 303)


@dataclass
class StepResult:
    name: str
    status: int
    ok: bool
    seconds: float
    findings: list[dict[str, Any]] = field(default_factory=list)


class Recorder:
    """Which findings each step added to the doctor's file."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen = 0

    def new_findings(self) -> list[dict[str, Any]]:
        found = read_file(str(self.path)) if self.path.exists() else []
        fresh, self._seen = found[self._seen:], len(found)
        return fresh

    def run(self, client: Client, steps: list[Step]) -> list[StepResult]:
        results = [StepResult("the app is created (its factory, the doctor installed)", 0, True, 0.0,
                              self.new_findings())]
        for step in steps:
            started = time.monotonic()
            try:
                page = step.run(client)
                status, ok = page.status, page.status in step.ok
            except Exception as error:  # the step failed: say so in the table, go on
                status, ok = 0, False
                step_error = f"{type(error).__name__}: {error}"
            else:
                step_error = ""
            result = StepResult(step.name + (f" (failed: {step_error})" if step_error else ""), status, ok,
                                round(time.monotonic() - started, 3))
            time.sleep(0.05)  # a gunicorn worker writes its finding after the response is sent
            result.findings = self.new_findings()
            results.append(result)
        return results
