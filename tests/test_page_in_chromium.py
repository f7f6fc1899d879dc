"""The transactions page in real headless Chromium, served by gunicorn: both edits of a row are
made from the page's own forms, as a user makes them, and each comes back to the filtered list.

The page carries one contact list (a <datalist>) instead of a <select> per row, and its forms
no return_to (they return by the Referer the page asks for): this is what proves that both
still work in a browser, not only when a test posts the fields.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator
from urllib.parse import parse_qsl, urlsplit

import pytest

from lab import databases
from lab.harness.runner import prepare_database
from lab.harness.server import GunicornServer
from tests.chromium import chromium
from tests.oracle import REFERENCE

LISTING = "/transactions?type=in&limit=5"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GunicornServer]:
    folder = tmp_path_factory.mktemp("page-in-chromium")
    url = databases.private_database("sqlite", "page_in_chromium", folder)
    prepare_database(url, 300)
    with GunicornServer("fixed.app:create_app()", env={"LAB_DATABASE_URL": url},
                        log_path=folder / "gunicorn.log", workers=1, threads=2) as running:
        yield running


def _row(browser: Any, tx_id: str) -> Any:
    from selenium.webdriver.common.by import By

    return browser.find_element(By.CSS_SELECTOR, f'tr[data-id="{tx_id}"]')


def _submit(browser: Any, row: Any, field: str, value: str) -> None:
    """Type `value` into the row's `field` and press that form's button; wait for the list."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    box = row.find_element(By.NAME, field)
    box.clear()
    box.send_keys(value)
    box.find_element(By.XPATH, "./ancestor::form//button").click()
    WebDriverWait(browser, 10).until(expected_conditions.staleness_of(row))


def test_both_edits_from_the_page_in_chromium(server: GunicornServer) -> None:
    from selenium.webdriver.common.by import By

    with chromium() as browser:
        browser.get(f"http://127.0.0.1:{server.port}{LISTING}")
        options = browser.find_elements(By.CSS_SELECTOR, "datalist#contacts option")
        assert len(options) == len(REFERENCE.contacts)  # one contact list for the page
        assert not browser.find_elements(By.CSS_SELECTOR, "tbody select")
        row = browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")[0]
        tx_id, version = row.get_attribute("data-id"), int(row.get_attribute("data-version"))

        _submit(browser, row, "label", "paid, seen in Chromium")
        assert parse_qsl(urlsplit(browser.current_url).query) == parse_qsl(urlsplit(LISTING).query)
        row = _row(browser, tx_id)
        assert row.find_element(By.NAME, "label").get_attribute("value") == "paid, seen in Chromium"
        assert int(row.get_attribute("data-version")) == version + 1

        contact = next(c for c in REFERENCE.contacts if c["id"] == 7)
        _submit(browser, row, "contact_id", "7")
        assert parse_qsl(urlsplit(browser.current_url).query) == parse_qsl(urlsplit(LISTING).query)
        row = _row(browser, tx_id)
        assert row.find_element(By.NAME, "contact_id").get_attribute("value") == "7"
        assert contact["name"] in row.text and int(row.get_attribute("data-version")) == version + 2
        assert row.find_element(By.NAME, "label").get_attribute("value") == "paid, seen in Chromium"


def test_live_page_draws_the_api_rows_and_a_reload_shows_an_edit(server: GunicornServer) -> None:
    """The live page in Chromium draws the rows of the server-rendered page (ids, versions,
    labels); after an edit through the API, a reload fetches the rows again from the server."""
    from selenium.webdriver.common.by import By

    from lab.harness.browser import Browser
    from lab.harness.server import Actor

    base = f"http://127.0.0.1:{server.port}"
    with chromium() as page_browser:
        page_browser.get(base + LISTING)
        rendered = [(int(r.get_attribute("data-id")), int(r.get_attribute("data-version")),
                     r.find_element(By.NAME, "label").get_attribute("value") or None)
                    for r in page_browser.find_elements(By.CSS_SELECTOR, "tr[data-id]")]
    with Browser() as browser:
        live = browser.open(base + LISTING.replace("/transactions", "/transactions/live"))
        assert [(r["id"], r["version"], r["label"]) for r in live] == rendered and len(live) == 5
        first = live[0]
        reply = Actor("bob", server.port).post_json(f"/api/transactions/{first['id']}/label",
                                                   {"label": "relabelled behind the page", "version": first["version"]})
        assert reply.status == 200
        again = browser.reload()[0]
        assert (again["version"], again["label"]) == (first["version"] + 1, "relabelled behind the page")
        fetched = browser.network("/api/transactions")
        assert len(fetched) == 1 and not fetched[0]["from_cache"] and fetched[0]["cache_control"] == "no-cache"
