"""Locust users of the transactions app; every request is logged for the checker.

Run by `python -m loadtests` (never imported by it or by the tests: locust patches the
process with gevent). Settings come from environment variables, so that a master and its
workers, started with the same environment, behave alike:

- LOAD_LOG_DIR: where each locust process appends its own `requests-<host>-<pid>.jsonl`;
- LOAD_READER_WEIGHT, LOAD_WRITER_WEIGHT: relative numbers of readers and writers (9, 1);
- LOAD_WAIT_MIN, LOAD_WAIT_MAX: think time between tasks, seconds (0.05, 0.5);
- LOAD_MAX_REQUESTS: requests per process after which its users stop (100000);
- LOAD_TIMEOUT: seconds before a request without a reply counts as a connection error (10).

Users: ReaderUser browses /transactions (HTML rows carry data-id/data-version) and
/api/transactions with realistic filters, following the next page link or next_cursor;
WriterUser reads a page, picks a row and edits its label or contact with the version it saw
(a 409 is the app's correct answer when someone was faster). ListPageUser and PingUser are
for the throughput ratio: the first list page against the trivial `/_lab/ping`.

Each request names its user in `X-User` (what a sign-in proxy would set) and `X-Lab-Actor`.
A log line: kind, method, url, monotonic `sent`/`received`, status (None: no reply), error or
exception, and for reads the (id, version) of every row shown, for edits the row, the version
sent and, when acknowledged, the new version, label and contact. time.monotonic() is one
system-wide clock on Linux, so the lines of several processes merge into one history.
"""

from __future__ import annotations

import html
import itertools
import json
import os
import random
import re
import socket
import time
from pathlib import Path
from typing import Any, TextIO
from urllib.parse import urlencode

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.exception import StopUser

from lab.seed import LABELS, TOKENS, reference_data

LOG_DIR = Path(os.environ.get("LOAD_LOG_DIR", "."))
READER_WEIGHT = int(os.environ.get("LOAD_READER_WEIGHT", "9"))
WRITER_WEIGHT = int(os.environ.get("LOAD_WRITER_WEIGHT", "1"))
WAIT_MIN = float(os.environ.get("LOAD_WAIT_MIN", "0.05"))
WAIT_MAX = float(os.environ.get("LOAD_WAIT_MAX", "0.5"))
MAX_REQUESTS = int(os.environ.get("LOAD_MAX_REQUESTS", "100000"))
TIMEOUT = float(os.environ.get("LOAD_TIMEOUT", "10"))

WALLETS = [w["address"] for w in reference_data().wallets]
ASSETS = sorted({asset for assets in TOKENS.values() for asset in assets})
CONTACT_IDS = [c["id"] for c in reference_data().contacts]
ROW = re.compile(r'<tr data-id="(\d+)" data-version="(\d+)">')
NEXT = re.compile(r'<a rel="next" href="([^"]+)">')
TITLE = re.compile(r"<title>(.*?)</title>", re.S)


class RequestLog:
    """This process's JSONL log, opened at the first request (a master makes none)."""

    def __init__(self) -> None:
        self.file: TextIO | None = None
        self.count = 0
        self.process = f"{socket.gethostname()}-{os.getpid()}"

    def write(self, record: dict[str, Any]) -> None:
        if self.file is None:
            LOG_DIR.mkdir(parents=True, exist_ok=True)
            self.file = (LOG_DIR / f"requests-{self.process}.jsonl").open("a", encoding="utf-8")
        self.count += 1
        self.file.write(json.dumps({"process": self.process, **record}) + "\n")

    def flush(self) -> None:
        if self.file is not None:
            self.file.flush()


LOG = RequestLog()
_user_numbers = itertools.count(1)
_browse_numbers = itertools.count(1)


@events.test_stop.add_listener
def _flush_on_stop(**_kwargs: Any) -> None:
    LOG.flush()


@events.quitting.add_listener
def _flush_on_quit(**_kwargs: Any) -> None:
    LOG.flush()


class LoggedUser(FastHttpUser):
    """A user whose every request goes through `call`, which logs it and judges nothing."""

    abstract = True
    wait_time = between(WAIT_MIN, WAIT_MAX)
    network_timeout = TIMEOUT
    connection_timeout = TIMEOUT

    def on_start(self) -> None:
        self.name = f"{type(self).__name__.removesuffix('User').lower()}-{LOG.process}-{next(_user_numbers)}"
        self.rng = random.Random()  # per user; a load is not meant to be repeatable, its judgement is

    def call(self, kind: str, method: str, url: str, name: str, body: Any = None,
             about: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
        """One logged request (`about` goes into its log line); returns the record and the
        parsed body (None when the reply is unusable)."""
        if LOG.count >= MAX_REQUESTS:
            raise StopUser()
        record: dict[str, Any] = {"kind": kind, "method": method, "url": url, "user": self.name, **(about or {})}
        parsed: Any = None
        record["sent"] = time.monotonic()
        try:
            with self.client.request(method, url, name=name, json=body, catch_response=True,
                                     headers={"X-Lab-Actor": self.name, "X-User": self.name}) as response:
                record["received"] = time.monotonic()
                parsed = self._judge_reply(kind, url, response, record)
        except Exception as error:  # the client itself failed: logged, counted as an error
            record.setdefault("received", time.monotonic())
            record.setdefault("status", None)
            record["exception"] = f"{type(error).__name__}: {error}"
        LOG.write(record)
        return record, parsed

    def _judge_reply(self, kind: str, url: str, response: Any, record: dict[str, Any]) -> Any:
        """Note the reply in `record`, tell locust's statistics whether it was expected, and
        return the parsed body (None when unusable)."""
        status = response.status_code or None
        record["status"] = status
        record["served_by"] = response.headers.get("X-Served-By") if status else None
        if status is None:
            record["error"] = f"{type(response.error).__name__}: {response.error}"
        elif status >= 500:
            record["error"] = f"HTTP {status}: {error_text(response.text or '')}"
        parsed = None
        try:
            parsed = self._parse(kind, url, status, response.text if status else "", record)
        except Exception as error:  # the reply was not what the app promises
            record["exception"] = f"{type(error).__name__}: {error}"
        expected = status == 200 or (kind == "edit" and status == 409)
        if expected and "exception" not in record:
            response.success()
        else:
            response.failure(record.get("exception") or record.get("error") or f"HTTP {status}")
        return parsed

    def _parse(self, kind: str, url: str, status: int | None, text: str, record: dict[str, Any]) -> Any:
        if kind == "read" and status == 200:
            if url.startswith("/api/"):
                page = json.loads(text)
                record["rows"] = [[item["id"], item["version"]] for item in page["items"]]
                return page
            record["rows"] = [[int(i), int(v)] for i, v in ROW.findall(text)]
            found = NEXT.search(text)
            return {"items": [{"id": r[0], "version": r[1]} for r in record["rows"]],
                    "next_url": html.unescape(found.group(1)) if found else None}
        if kind == "edit" and status in (200, 409):
            reply = json.loads(text)
            if status == 200:
                record["ack_version"] = reply["version"]
                record["ack_label"] = reply["label"]
                record["ack_contact"] = reply["contact"]["id"] if reply["contact"] else None
            else:
                record["current_version"] = reply.get("current_version")
            return reply
        return None

    # ---- browsing ----------------------------------------------------------------------

    def read_page(self, api: bool, params: list[tuple[str, str]], pages: int) -> list[dict[str, Any]]:
        """Read up to `pages` pages of one listing, following its next link; returns the rows seen.

        The pages of one listing are one "browse" in the log, numbered from 1, so the checker
        can see a row shown twice. The API's next page is `next_cursor` (keyset); a variant
        with numbered pages answers `next_page` instead, and that is followed too.
        """
        base = "/api/transactions" if api else "/transactions"
        url: str | None = f"{base}?{urlencode(params)}" if params else base
        browse = f"{self.name}-{next(_browse_numbers)}"
        seen: list[dict[str, Any]] = []
        for number in range(1, pages + 1):
            if url is None:
                break
            _record, page = self.call("read", "GET", url, base, about={"browse": browse, "page": number})
            if not page:
                break
            seen.extend(page["items"])
            url = None
            if not api:
                url = page.get("next_url")
            elif page.get("next_cursor"):
                url = f"{base}?{urlencode(params + [('cursor', page['next_cursor'])])}"
            elif page.get("next_page"):
                url = f"{base}?{urlencode(params + [('page', str(page['next_page']))])}"
            if number < pages:
                time.sleep(self.rng.uniform(0, WAIT_MAX / 2))  # the user looks at the page (gevent sleep)
        return seen


def error_text(text: str) -> str:
    """The message of an error reply: the JSON `error`, else the HTML title, else its start."""
    try:
        return str(json.loads(text)["error"])[:300]
    except (ValueError, KeyError, TypeError):
        found = TITLE.search(text)
        return html.unescape(found.group(1)).strip()[:300] if found else text[:300]


def realistic_filters(rng: random.Random) -> list[tuple[str, str]]:
    """What people filter by, roughly as often as they do: mostly nothing, then a wallet."""
    roll = rng.random()
    params: list[tuple[str, str]] = []
    if roll < 0.40:
        pass
    elif roll < 0.60:
        params.append(("wallet", rng.choice(WALLETS)))
        if rng.random() < 0.2:
            params.append(("wallet", rng.choice(WALLETS)))
    elif roll < 0.70:
        params.append(("type", rng.choice(["in", "out", "swap", "fee"])))
    elif roll < 0.78:
        params.append(("asset", rng.choice(ASSETS)))
    elif roll < 0.84:
        params.append(("label", rng.choice(LABELS)))
    elif roll < 0.88:
        params.append(("label_contains", rng.choice(["exchange", "fee", "%", "Caf"])))
    elif roll < 0.92:
        params.append(("unlabelled", "1"))
    elif roll < 0.96:
        params.append(("contact", str(rng.choice(CONTACT_IDS))))
    else:
        month = rng.randint(1, 12)
        params += [("from", f"2025-{month:02d}-01"), ("to", f"2025-{month:02d}-15T12:00:00Z")]
    if rng.random() < 0.3:
        params.append(("limit", str(rng.choice([20, 100]))))
    return params


class ReaderUser(LoggedUser):
    """Browses the list, HTML or API, one to four pages of one filter."""

    weight = READER_WEIGHT

    @task
    def browse(self) -> None:
        pages = self.rng.choices([1, 2, 3, 4], weights=[60, 20, 12, 8])[0]
        self.read_page(api=self.rng.random() < 0.5, params=realistic_filters(self.rng), pages=pages)


class WriterUser(LoggedUser):
    """Opens the newest transactions (all, or one wallet's), then edits one it saw."""

    weight = WRITER_WEIGHT
    edits = itertools.count(1)

    @task
    def edit(self) -> None:
        params = [("wallet", self.rng.choice(WALLETS))] if self.rng.random() < 0.3 else []
        params.append(("limit", "20"))
        rows = self.read_page(api=self.rng.random() < 0.5, params=params, pages=1)
        if not rows:
            return
        # People label what just arrived: mostly one of the newest few rows, so edits collide
        # as they do in a team (the fixed app answers such a collision with 409).
        row = rows[min(int(self.rng.expovariate(1 / 3)), len(rows) - 1)]
        time.sleep(self.rng.uniform(0, WAIT_MAX))  # the user decides what to write
        if self.rng.random() < 0.7:  # a unique label, so the audit can tell which edit landed
            field, body = "label", {"label": f"{self.rng.choice(LABELS)} ({self.name}-{next(self.edits)})"}
        else:
            field, body = "contact", {"contact_id": self.rng.choice(CONTACT_IDS + [None])}
        body["version"] = row["version"]
        self.call("edit", "POST", f"/api/transactions/{row['id']}/{field}", f"/api/transactions/[id]/{field}",
                  body, about={"row_id": row["id"], "seen_version": row["version"]})


class ListPageUser(LoggedUser):
    """The ratio phase: the first page of the list, nothing else."""

    weight = 1

    @task
    def first_page(self) -> None:
        self.call("read", "GET", "/transactions", "/transactions")


class PingUser(LoggedUser):
    """The ratio phase: the lab's trivial endpoint of the same server."""

    weight = 1

    @task
    def ping(self) -> None:
        self.call("ping", "GET", "/_lab/ping", "/_lab/ping")
