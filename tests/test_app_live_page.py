"""The live page (/transactions/live): a shell whose script fetches its rows from
/api/transactions. It runs no query itself, loads nothing from outside the app, and the JSON it
fetches may be stored by a browser only if it asks the server before every use (no-cache, and
no validator, so asking is a full request). Drawn in Chromium, in tests/test_page_in_chromium.py.
"""

from __future__ import annotations

import re

from sqlalchemy import event


def test_live_page_is_a_shell_that_fetches_the_api(client, engine) -> None:  # type: ignore[no-untyped-def]
    statements: list[str] = []
    listen = lambda *args: statements.append(args[2])  # noqa: E731
    event.listen(engine, "before_cursor_execute", listen)
    try:
        response = client.get("/transactions/live?type=in&limit=5")
    finally:
        event.remove(engine, "before_cursor_execute", listen)
    page = response.get_data(as_text=True)
    assert response.status_code == 200 and response.mimetype == "text/html"
    assert statements == []  # the rows come from the API, not from this page
    assert 'fetch("/api/transactions" + window.location.search' in page
    assert "data-id" not in page.split("<script>")[0]  # no server-rendered rows
    # Nothing loaded from elsewhere: no src or href to another host, no CDN.
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert len(page.encode()) < 8_000


def test_the_json_it_fetches_must_be_revalidated_and_has_no_validator(client) -> None:  # type: ignore[no-untyped-def]
    response = client.get("/api/transactions?limit=1")
    assert response.status_code == 200
    control = response.cache_control
    assert control.no_cache and not control.max_age and not control.public and response.expires is None
    assert response.headers.get("ETag") is None and response.headers.get("Last-Modified") is None
