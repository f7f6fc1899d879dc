"""# BUG: replica_lag -- reads go to a lagging streaming replica, and a client's own edit is not waited for.

What the user sees: the edit answers 200 and is committed on the primary, yet the page the user
opens right after it still shows the old label; a moment later (the replica's lag) it is right.
Why: the app writes to the primary and reads from a replica (PostgreSQL's hot standby,
MariaDB's replica) that applies the primary's log some time behind it. The read runs in a fresh transaction with an empty
identity map, on a server that has not applied the commit yet: the staleness is in the
database (a replica behind its primary), not in the ORM, and no session rule can cure it.
Cure: read-your-writes (fixed/app.py, lab/routing.py): the edit hands the client the primary's
write position after its commit (a cookie: PostgreSQL's `pg_current_wal_lsn()`, MariaDB's
`@@gtid_binlog_pos`); that client's next read waits, bounded, until the replica has applied it
(`pg_last_wal_replay_lsn()`; `MASTER_GTID_WAIT()`), or reads from the primary.
"""

from __future__ import annotations

import json
import sys
from typing import Any, Callable, TypeVar

from flask import Flask, redirect, request, session
from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import Session
from werkzeug.wrappers import Response

from lab import caching, jobs, labmode, prices, queries, routing, web
from lab.engine import configure_engine, database_url, engine_options
from lab.models import COLUMN_DEFAULTS_OPTION, Base, utc_now

T = TypeVar("T")

# Session rules that keep every page fresh (each broken variant breaks exactly one):
# 1. Flask-SQLAlchemy's `db.session` is scoped to the app context, which Flask pushes per
#    request, and removed at its teardown: each request starts with an empty identity map
#    and a new transaction, so its first read sees everything committed before it.
# 2. Writes commit explicitly and roll back on any error; reads end with the request.
# 3. No ORM object outlives its request: responses are built from plain dicts.
# 4. Nothing touches the database at import: the schema is made by `flask init-db`.
# 5. Edits are optimistic: they carry the version the user saw; a stale one gets 409.
# Run: `flask --app fixed.app init-db`, `flask --app fixed.app seed`, then
# `gunicorn 'fixed.app:create_app()'`; the job: `flask --app fixed.app worker < ids`.

# FIX: a callable: SQLAlchemy calls it for every new row, so each contact gets its own time.
COLUMN_DEFAULTS = {"contacts.created_at": utc_now}
# Reads may go to a streaming replica (LAB_REPLICA_URL; unset: everything on the primary).
db = SQLAlchemy(model_class=Base, engine_options={"execution_options": {COLUMN_DEFAULTS_OPTION: COLUMN_DEFAULTS}},
                session_options={"class_": routing.RoutingSession})


def current_session() -> Session:
    """The session that serves the current request (or job): every route gets it from here."""
    # FIX: Flask-SQLAlchemy's session, scoped to the app context (one per request) and
    # removed, which closes it and ends its transaction, when that context is torn down.
    return db.session()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    app = Flask(__name__, template_folder=web.TEMPLATE_FOLDER)
    url = (config or {}).get("SQLALCHEMY_DATABASE_URI") or database_url()
    app.config.update(SQLALCHEMY_DATABASE_URI=url, SQLALCHEMY_ENGINE_OPTIONS=engine_options(url))
    app.config.update(config or {})
    db.init_app(app)
    routing.install(app, db, read_your_writes=False)  # BUG: reads on the replica never wait for the client's writes
    with app.app_context():
        configure_engine(db.engine)  # creates no connection
    web.install(app, engine=lambda: db.engine)
    labmode.install(app, session=current_session, engine=lambda: db.engine)
    jobs.install(app, session=current_session)  # the label-changed notice (Celery), if a broker is set

    def write(change: Callable[[Session], T]) -> T:
        # FIX: explicit commit when the change succeeded, rollback when anything failed.
        try:
            result = change(current_session())
            current_session().commit()
            return result
        except Exception:
            current_session().rollback()
            raise

    @app.get("/api/transactions")
    def api_transactions() -> dict[str, Any]:
        filters = web.filters_from(request.args)
        return web.page_dict(queries.list_page(current_session(), filters), filters)

    @app.get("/transactions")
    def transactions_page() -> str:
        filters = web.filters_from(request.args)
        contacts = [{"id": c.id, "name": c.name} for c in queries.list_contacts(current_session())]
        return web.render_page(queries.list_page(current_session(), filters), filters, contacts)

    @app.get("/transactions/live")
    def transactions_live_page() -> str:
        return web.render_live_page()  # no query here: its script fetches /api/transactions

    # Asset prices: a copy in memory per process, refreshed every PRICES_REFRESH_SECONDS (lab/prices.py).
    price_table = app.extensions["asset_prices"] = prices.PriceTable(url, prices.refresh_seconds(app.config))

    @app.get("/api/prices")
    def api_prices() -> dict[str, Any]:
        price_table.ensure_running()  # FIX: the refresher runs in the process that serves: each worker, after the fork
        return price_table.served()

    details_cache = caching.install(app)  # one transaction's details, in a store all workers share (LAB_CACHE_DIR)

    @app.get("/api/transactions/<int:tx_id>")
    @details_cache.memoize()  # FIX: keyed on the route's int id, the very value the edits below delete
    def api_transaction(tx_id: int) -> dict[str, Any]:
        return web.row_dict(queries.get_transaction(current_session(), tx_id))

    @app.after_request
    def forget_edited(response: Response) -> Response:
        # FIX: once an edit of a row has committed (its view returned a success), delete that
        # row's cached details with the same call shape as the read: api_transaction(int id).
        if request.method == "POST" and response.status_code < 400 and "tx_id" in (request.view_args or {}):
            details_cache.delete_memoized(api_transaction, request.view_args["tx_id"])
        return response

    @app.post("/api/transactions/<int:tx_id>/label")
    def api_edit_label(tx_id: int) -> dict[str, Any]:
        body = web.json_body("label", "version")
        label, version = web.label_value(body.get("label")), web.seen_version(body.get("version"))
        row = write(lambda s: web.row_dict(queries.update_label(s, tx_id, label, version)))
        return {**row, **jobs.send_label_changed(app, tx_id)}  # FIX: the job is sent once the edit is committed

    @app.post("/api/transactions/<int:tx_id>/contact")
    def api_edit_contact(tx_id: int) -> dict[str, Any]:
        body = web.json_body("contact_id", "version")
        contact, version = web.contact_value(body.get("contact_id")), web.seen_version(body.get("version"))
        return write(lambda s: web.row_dict(queries.update_contact(s, tx_id, contact, version)))

    @app.post("/api/transactions/<int:tx_id>/note")
    def api_append_note(tx_id: int) -> dict[str, Any]:
        # A merge under a row lock: no version to send (queries.append_note says why).
        note = web.note_value(web.json_body("note").get("note"))
        return write(lambda s: web.row_dict(queries.append_note(s, tx_id, note)))

    def my_wallets() -> list[dict[str, Any]]:
        # FIX: the cookie session holds only the ids the visitor chose; names and chains are
        # read from the database on every request, so a rename shows at once.
        wallets = queries.wallets_by_id(current_session(), web.chosen_wallet_ids(), skip_missing=True)
        return [web.wallet_dict(w) for w in wallets]

    app.context_processor(lambda: {"my_wallets": my_wallets})  # the page calls it: no query elsewhere

    @app.get("/api/my-wallets")
    def api_my_wallets() -> dict[str, Any]:
        return {"wallets": my_wallets()}

    @app.put("/api/my-wallets")
    def api_choose_wallets() -> dict[str, Any]:
        ids = web.my_wallet_ids(web.json_body("wallet_ids")["wallet_ids"])
        wallets = queries.wallets_by_id(current_session(), ids)  # an unknown id: 400, nothing stored
        session[web.MY_WALLETS_KEY] = ids
        return {"wallets": [web.wallet_dict(w) for w in wallets]}

    @app.post("/transactions/<int:tx_id>/label")
    def form_edit_label(tx_id: int) -> Response:
        label, version = web.label_value(request.form.get("label")), web.seen_version(request.form.get("version"))
        write(lambda s: queries.update_label(s, tx_id, label, version))
        jobs.send_label_changed(app, tx_id)  # FIX: after the commit, so its worker reads the new row
        return redirect(web.back_to_list(request.form), code=303)

    @app.post("/transactions/<int:tx_id>/contact")
    def form_edit_contact(tx_id: int) -> Response:
        contact, version = web.contact_value(request.form.get("contact_id")), web.seen_version(request.form.get("version"))
        write(lambda s: queries.update_contact(s, tx_id, contact, version))
        return redirect(web.back_to_list(request.form), code=303)

    @app.post("/api/contacts")
    def api_add_contact() -> tuple[dict[str, Any], int]:
        body = web.json_body("name")
        name, address = web.contact_name(body.get("name")), web.contact_address(body.get("address"))
        return write(lambda s: web.contact_dict(queries.add_contact(s, name, address))), 201

    @app.post("/contacts")
    def form_add_contact() -> Response:
        name, address = web.contact_name(request.form.get("name")), web.contact_address(request.form.get("address"))
        write(lambda s: queries.add_contact(s, name, address))
        return redirect(web.back_to_list(request.form), code=303)

    @app.cli.command("worker")
    def worker() -> None:
        """A queue consumer: for each transaction id read from stdin, print that row as JSON."""
        for line in sys.stdin:
            if not line.strip():
                continue
            with app.app_context():  # FIX: a new app context, so a new session, for every job
                try:
                    result = web.row_dict(queries.get_transaction(current_session(), int(line)))
                except (ValueError, queries.NotFound) as error:
                    result = {"error": str(error)}
            print(json.dumps(result), flush=True)

    return app
