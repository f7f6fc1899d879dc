"""The app the benchmark measures: fixed/app.py unchanged, plus the OFFSET variant to compare.

`/api/transactions` is the fixed app's own route (keyset). `/bench/offset-transactions?page=N`
serves the same list, filters and JSON shape through `lab.queries.list_page_offset` with the
fixed app's session, so the two differ by the pagination alone. Served under gunicorn as
`bench.app:create_app()`; the database comes from LAB_DATABASE_URL as for the fixed app.
"""

from __future__ import annotations

from typing import Any

from flask import Flask, request

from fixed.app import create_app as create_fixed_app
from fixed.app import current_session
from lab import queries, web


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = create_fixed_app(config)

    @app.get("/bench/offset-transactions")
    def offset_transactions() -> dict[str, Any]:
        filters, page_number = web.offset_page_from(request.args)
        return web.offset_page_dict(queries.list_page_offset(current_session(), filters, page_number), filters)

    return app
