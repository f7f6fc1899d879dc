"""HTTP plumbing shared by every variant: input parsing, output shapes, errors, CLI.

Nothing here holds a Session or an ORM object: each variant's app.py decides which session
serves a request, and the functions here only turn rows into plain dicts within the request.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlencode, urlsplit

import click
from flask import Flask, Response, has_request_context, jsonify, render_template, request, session
from sqlalchemy import Engine
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from lab import queries, seed
from lab.engine import REPO_ROOT
from lab.models import CONTACT_TEXT_MAX_LENGTH, LABEL_MAX_LENGTH, MAX_INTEGER, TRANSACTION_TYPES, Contact, Transaction, Wallet

TEMPLATE_FOLDER = str(Path(__file__).parent / "templates")
FILTER_FIELDS = ("wallet", "type", "asset", "label", "label_contains", "unlabelled", "contact", "from", "to", "limit")
REPEATABLE_FIELDS = frozenset({"wallet"})
# "My wallets": the wallets a visitor chose, kept in Flask's signed cookie session as ids only.
MY_WALLETS_KEY = "my_wallets"
MAX_MY_WALLETS = 20
SECRET_KEY_MIN_LENGTH = 32
DEVELOPMENT_KEY_PATH = REPO_ROOT / "var" / "secret_key"


class BadInput(ValueError):
    """A request parameter the app refuses; the response names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


# ---- input -----------------------------------------------------------------------------

def filters_from(args: MultiDict[str, str]) -> queries.Filters:
    """Parse the query string of /transactions and /api/transactions."""
    unknown = sorted(set(args) - set(FILTER_FIELDS) - {"cursor"})
    if unknown:
        raise BadInput(unknown[0], f"unknown parameter; known: {', '.join(FILTER_FIELDS + ('cursor',))}")
    for name, value in args.items(multi=True):
        _check_text(name, value)
    kind = _blank_to_none(args.get("type"))
    if kind is not None and kind not in TRANSACTION_TYPES:
        raise BadInput("type", f"must be one of {', '.join(TRANSACTION_TYPES)}, not {kind!r}")
    label = _blank_to_none(args.get("label"))
    label_contains = _blank_to_none(args.get("label_contains"))
    unlabelled = _flag(args, "unlabelled")
    if unlabelled and (label or label_contains):
        raise BadInput("unlabelled", "cannot be combined with label or label_contains")
    for name, value in (("label", label), ("label_contains", label_contains)):
        if value is not None and len(value) > LABEL_MAX_LENGTH:
            raise BadInput(name, f"at most {LABEL_MAX_LENGTH} characters")
    date_from, date_to = _timestamp(args, "from"), _timestamp(args, "to")
    if date_from and date_to and date_from >= date_to:
        raise BadInput("to", "must be after 'from' (from is inclusive, to exclusive)")
    asset = _blank_to_none(args.get("asset"))
    cursor_token = _blank_to_none(args.get("cursor"))
    try:
        cursor = queries.Cursor.decode(cursor_token) if cursor_token else None
    except ValueError as error:
        raise BadInput("cursor", str(error)) from None
    return queries.Filters(
        wallets=tuple(w.strip() for w in args.getlist("wallet") if w.strip()),
        type=kind,
        asset=asset.upper() if asset else None,
        label=label,
        label_contains=label_contains,
        unlabelled=unlabelled,
        contact_id=_int(args, "contact", minimum=1, maximum=MAX_INTEGER),
        date_from=date_from,
        date_to=date_to,
        limit=_int(args, "limit", minimum=1, maximum=queries.MAX_PAGE_SIZE) or queries.DEFAULT_PAGE_SIZE,
        cursor=cursor,
    )


def _blank_to_none(value: str | None) -> str | None:
    value = value.strip() if value is not None else None
    return value or None


def _flag(args: Mapping[str, str], name: str) -> bool:
    value = (args.get(name) or "").strip().lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise BadInput(name, "must be 1 or 0")


def _int(args: Mapping[str, str], name: str, minimum: int, maximum: int | None = None) -> int | None:
    raw = _blank_to_none(args.get(name))
    if raw is None:
        return None
    value = _whole_number(raw)
    if value is None:
        raise BadInput(name, f"must be a whole number, not {raw[:30]!r}")
    if value < minimum or (maximum is not None and value > maximum):
        bounds = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise BadInput(name, f"must be {bounds}, not {raw[:30]}")
    return value


def _whole_number(raw: str) -> int | None:
    """ASCII digits as an int, else None. str.isdigit() alone accepts '²', which int() refuses
    (a 500); and int() refuses more than 4,300 digits: any such number is out of range anyway."""
    if not (raw.isascii() and raw.isdigit()):
        return None
    digits = raw.lstrip("0") or "0"
    return int(digits) if len(digits) <= 20 else 10**20


def _check_text(field: str, value: str) -> None:
    # PostgreSQL refuses NUL in text (a 500 there, stored on the others), and no driver can
    # send an unpaired surrogate ("\ud800" is valid JSON): refused alike on every backend.
    if "\x00" in value or any("\ud800" <= c <= "\udfff" for c in value):
        raise BadInput(field, "must not contain NUL characters or unpaired surrogates")


def _from_form() -> bool:
    # A form sends every field as text; JSON has numbers, so a string there is a type error.
    return not (has_request_context() and request.is_json)


_OFFSET_SENT_AS_SPACE = re.compile(r"(\d\d:\d\d(?::\d\d(?:\.\d+)?)?) (\d\d(?::?\d\d)?)$")


def _timestamp(args: Mapping[str, str], name: str) -> dt.datetime | None:
    raw = _blank_to_none(args.get(name))
    if raw is None:
        return None
    # An unencoded "+02:00" in a hand-written URL arrives as " 02:00": put the sign back.
    raw = _OFFSET_SENT_AS_SPACE.sub(r"\1+\2", raw)
    try:
        value = dt.datetime.fromisoformat(raw.replace("Z", "+00:00").replace(" ", "T", 1))
    except ValueError:
        raise BadInput(name, f"must be an ISO 8601 date or time (UTC unless an offset is given), not {raw!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=dt.timezone.utc)
    try:
        return value.astimezone(dt.timezone.utc)
    except OverflowError:  # 0001-01-01T00:00+01:00 is before year 1 in UTC
        raise BadInput(name, f"must be within years 1 to 9999 in UTC, not {raw!r}") from None


def _refuse_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for key, value in pairs:
        if key in seen:
            raise BadInput(key, "given more than once in the JSON object")
        seen[key] = value
    return seen


def json_body(*required: str) -> dict[str, Any]:
    """The request's JSON object; each `required` key must be present (null is a value), and
    no key twice (`json` would keep the last one silently)."""
    if not request.is_json:
        raise BadInput("body", "must be a JSON object, sent with Content-Type: application/json")
    try:
        body = json.loads(request.get_data(), object_pairs_hook=_refuse_duplicate_keys)
    except BadInput:
        raise
    except (ValueError, RecursionError):  # malformed JSON or bytes that are not UTF-8 JSON text
        body = None
    if not isinstance(body, dict):
        raise BadInput("body", "must be a JSON object, sent with Content-Type: application/json")
    for key in required:
        if key not in body:
            raise BadInput(key, "required (send null to clear it)" if key != "version" else
                           "required: the version of the row you saw")
    return body


def seen_version(value: Any) -> int:
    """The version the user saw, from JSON (int) or a form (digits)."""
    if isinstance(value, str) and _from_form():
        value = _whole_number(value.strip())
    if type(value) is not int or not 1 <= value <= MAX_INTEGER:
        raise BadInput("version", "required: the version of the row you saw, a whole number >= 1")
    return value


def _optional_text(field: str, value: Any, max_length: int) -> str | None:
    """An optional text field: null, or a string of at most `max_length` characters once
    stripped (empty: none)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise BadInput(field, "must be a string or null")
    _check_text(field, value)
    value = value.strip()
    if len(value) > max_length:
        raise BadInput(field, f"at most {max_length} characters, got {len(value)}")
    return value or None


def label_value(value: Any) -> str | None:
    return _optional_text("label", value, LABEL_MAX_LENGTH)


NOTE_MAX_LENGTH = 40


def note_value(value: Any) -> str:
    """A note to append to a label (queries.append_note): a short text without the separator."""
    if not isinstance(value, str):
        raise BadInput("note", "required: a string")
    _check_text("note", value)
    value = value.strip()
    if not value or len(value) > NOTE_MAX_LENGTH or queries.NOTE_SEPARATOR.strip() in value:
        raise BadInput("note", f"1 to {NOTE_MAX_LENGTH} characters, without {queries.NOTE_SEPARATOR.strip()!r}")
    return value


def contact_value(value: Any) -> int | None:
    if value is None:
        return None
    if isinstance(value, str) and _from_form():
        if not value.strip():  # the form's "none" choice
            return None
        value = _whole_number(value.strip())
    if type(value) is not int or value < 1:
        raise BadInput("contact_id", "must be a contact id (a whole number >= 1) or null to clear")
    if value > MAX_INTEGER:  # no such contact can exist; PostgreSQL would fail on the UPDATE
        raise queries.UnknownContact(f"no contact with id {value}")
    return value


def contact_name(value: Any) -> str:
    """A new contact's name: required, 1 to CONTACT_TEXT_MAX_LENGTH characters once stripped."""
    if not isinstance(value, str):
        raise BadInput("name", "required: a string")
    _check_text("name", value)
    value = value.strip()
    if not value:
        raise BadInput("name", "required: must not be empty")
    if len(value) > CONTACT_TEXT_MAX_LENGTH:
        raise BadInput("name", f"at most {CONTACT_TEXT_MAX_LENGTH} characters, got {len(value)}")
    return value


def contact_address(value: Any) -> str | None:
    """A new contact's optional address (null or empty: none)."""
    return _optional_text("address", value, CONTACT_TEXT_MAX_LENGTH)


def my_wallet_ids(value: Any) -> list[int]:
    """The wallet ids a visitor chose (a JSON array of whole numbers >= 1, each once)."""
    if not isinstance(value, list):
        raise BadInput("wallet_ids", "must be a JSON array of wallet ids (whole numbers >= 1)")
    if len(value) > MAX_MY_WALLETS:
        raise BadInput("wallet_ids", f"at most {MAX_MY_WALLETS} wallets, got {len(value)}")
    for item in value:
        if type(item) is not int or item < 1:
            raise BadInput("wallet_ids", f"must hold wallet ids (whole numbers >= 1), not {json.dumps(item)[:30]}")
    if len(set(value)) != len(value):
        raise BadInput("wallet_ids", "each wallet at most once")
    if any(item > MAX_INTEGER for item in value):  # no such wallet can exist
        raise queries.UnknownWallet(f"no wallet with id {next(i for i in value if i > MAX_INTEGER)}")
    return value


def chosen_wallet_ids() -> list[int]:
    """The ids in this visitor's cookie session ([] when none). The cookie is signed, so it
    holds what this app wrote; a value of another shape (an older release's) counts as none."""
    value = session.get(MY_WALLETS_KEY, [])
    if not isinstance(value, list) or not all(type(i) is int and 0 < i <= MAX_INTEGER for i in value):
        return []
    return value[:MAX_MY_WALLETS]


# ---- output ----------------------------------------------------------------------------

def row_dict(row: Transaction) -> dict[str, Any]:
    """A plain, JSON-ready copy of one transaction, made while its session is still open."""
    wallet, contact = row.wallet, row.contact
    return _transaction_dict(row, wallet.address, wallet.chain, wallet.name,
                             (contact.id, contact.name) if contact else None)


def contact_dict(contact: Contact) -> dict[str, Any]:
    """A plain copy of a contact, with its creation time (UTC, microseconds)."""
    return {"id": contact.id, "name": contact.name, "address": contact.address,
            "created_at": contact.created_at.isoformat().replace("+00:00", "Z")}


def list_row_dict(row: queries.ListRow) -> dict[str, Any]:
    """The same copy of one row of a list (the wallet and contact read as columns)."""
    transaction = row.Transaction
    contact = (transaction.contact_id, row.contact_name) if transaction.contact_id is not None else None
    return _transaction_dict(transaction, row.wallet_address, row.wallet_chain, row.wallet_name, contact)


def _transaction_dict(row: Transaction, address: str, chain: str, name: str,
                      contact: tuple[int, str | None] | None) -> dict[str, Any]:
    return {
        "id": row.id,
        "version": row.version,
        "tx_hash": row.tx_hash,
        "wallet": {"address": address, "chain": chain, "name": name},
        "type": row.type,
        "asset": row.asset_symbol,
        "amount": str(row.amount),
        "occurred_at": row.occurred_at.isoformat().replace("+00:00", "Z"),
        "label": row.label,
        "contact": {"id": contact[0], "name": contact[1]} if contact else None,
    }


def wallet_dict(wallet: Wallet) -> dict[str, Any]:
    return {"id": wallet.id, "address": wallet.address, "chain": wallet.chain, "name": wallet.name}


def page_dict(page: queries.Page, filters: queries.Filters) -> dict[str, Any]:
    return {
        "items": [list_row_dict(row) for row in page.rows],
        "next_cursor": page.next_cursor.encode() if page.next_cursor else None,
        "limit": filters.limit,
        "total": {"count": page.total, "capped": page.total_capped},
    }


def render_page(page: queries.Page, filters: queries.Filters, contacts: list[dict[str, Any]]) -> str:
    data = page_dict(page, filters)
    kept = [(k, v) for k, v in request.args.items(multi=True) if k != "cursor"]
    return render_template(
        "transactions.html",
        page=data,
        contacts=contacts,
        args=request.args,
        types=TRANSACTION_TYPES,
        next_query=urlencode(kept + [("cursor", data["next_cursor"])]) if data["next_cursor"] else None,
        total_text=f"{page.total:,}+" if page.total_capped else f"{page.total:,}",
    )


def render_live_page() -> str:
    """The list drawn in the browser: the page holds no rows, its script fetches /api/transactions."""
    return render_template("live.html")


def back_to_list(form: Mapping[str, str]) -> str:
    """Where a form edit returns: the list with the filters the user had (never another site).

    The form's `return_to` (a query string) when it sends one; else the query of the list page
    the form was posted from, read from the Referer (base.html asks browsers to send it for
    requests to this site). The page's forms rely on the latter: a return_to in each of its
    100 forms would repeat the filters' query 100 times in every page.
    """
    query = form.get("return_to")
    if query is None:
        query = _list_query_of(request.referrer)
    # Control characters (CR/LF) cannot go into a Location header: the redirect would fail
    # with a 500 *after* the edit was committed. Such a return_to is dropped, like a URL.
    if not query or "://" in query or any(c < " " or c == "\x7f" for c in query):
        return "/transactions"
    return f"/transactions?{query}"


def _list_query_of(referrer: str | None) -> str:
    """The query of a Referer that is this app's list page, else ''."""
    if not referrer:
        return ""
    parts = urlsplit(referrer)
    if parts.path != "/transactions" or (parts.netloc and parts.netloc != request.host):
        return ""
    return parts.query


# ---- app-wide behaviour ----------------------------------------------------------------

def install(app: Flask, engine: Callable[[], Engine]) -> None:
    """Error pages, the X-Served-By header, the cookie session and the CLI (`init-db`, `seed`)."""
    configure_cookie_session(app)

    @app.after_request
    def _served_by(response: Response) -> Response:
        # Which process and thread answered: scenarios steer and judge by it.
        response.headers["X-Served-By"] = f"{os.getpid()}/{threading.get_native_id()}"
        # Pages and JSON change with every edit: a browser or proxy may keep a copy but must ask
        # the server before every use (RFC 9111 5.2.2.4). No ETag or Last-Modified is sent, so
        # that question is always a full request that runs the query: the live page's fetch()
        # of /api/transactions sees each committed edit, on a reload or a new visit alike.
        response.headers.setdefault("Cache-Control", "no-cache")
        return response

    @app.before_request
    def _one_value_per_field() -> None:
        # A field sent twice (`?type=in&type=out`, a form with two `version`s) is ambiguous:
        # refused, naming it, rather than silently taking the first. Only `wallet` repeats.
        for values in (request.args, request.form):
            for name in values:
                if name not in REPEATABLE_FIELDS and len(values.getlist(name)) > 1:
                    raise BadInput(name, "given more than once (only wallet may repeat)")

    @app.errorhandler(BadInput)
    def _bad_input(error: BadInput) -> tuple[Response | str, int]:
        return _error(400, error.message, error.field)

    @app.errorhandler(queries.UnknownContact)
    def _unknown_contact(error: queries.UnknownContact) -> tuple[Response | str, int]:
        return _error(400, str(error), "contact_id")

    @app.errorhandler(queries.ContactExists)
    def _contact_exists(error: queries.ContactExists) -> tuple[Response | str, int]:
        return _error(409, str(error), "name")

    @app.errorhandler(queries.NoteDoesNotFit)
    def _note_does_not_fit(error: queries.NoteDoesNotFit) -> tuple[Response | str, int]:
        return _error(409, str(error), "note")

    @app.errorhandler(queries.UnknownWallet)
    def _unknown_wallet(error: queries.UnknownWallet) -> tuple[Response | str, int]:
        return _error(400, str(error), "wallet_ids")

    @app.errorhandler(queries.NotFound)
    def _not_found(error: queries.NotFound) -> tuple[Response | str, int]:
        return _error(404, str(error), "id")

    @app.errorhandler(queries.VersionConflict)
    def _conflict(error: queries.VersionConflict) -> tuple[Response | str, int]:
        message = f"this transaction was changed by someone else ({error}); reload and edit again"
        return _error(409, message, "version", current_version=error.current_version)

    @app.errorhandler(HTTPException)
    def _http_error(error: HTTPException) -> tuple[Response | str, int]:
        return _error(error.code or 500, error.description or error.name, None)

    @app.cli.command("init-db")
    @click.option("--drop", is_flag=True, help="Drop the lab's tables first.")
    def init_db(drop: bool) -> None:
        """Create the schema (never done at import or at request time)."""
        seed.create_schema(engine(), drop_first=drop)
        click.echo(f"schema ready on {engine().url.render_as_string(hide_password=True)}")

    @app.cli.command("seed")
    @click.option(
        "--size", default=2_000, show_default=True, help=f"transactions, {seed.MIN_SIZE}..{seed.MAX_SIZE}",
        type=click.IntRange(seed.MIN_SIZE, seed.MAX_SIZE),  # a usage error, not a traceback
    )
    @click.option("--seed", "seed_value", default=seed.DEFAULT_SEED, show_default=True)
    def seed_command(size: int, seed_value: int) -> None:
        """Replace all rows with the deterministic data set."""
        seconds = seed.seed(engine(), size, seed_value)
        click.echo(f"seeded {size:,} transactions (seed {seed_value}) in {seconds:.1f} s")


def configure_cookie_session(app: Flask) -> None:
    """The key that signs Flask's cookie session, and the cookie's flags.

    The key is the app's SECRET_KEY if its config sets one, else `LAB_SECRET_KEY`. Every
    process serving the app must use the same key: one made per process (os.urandom in
    create_app) makes a cookie signed by one gunicorn worker invalid in the next, and the
    session silently starts empty. Without either, a development key is made once and kept in
    var/secret_key (mode 0600), so all workers and restarts of this checkout share it; a
    deployment sets LAB_SECRET_KEY instead. The cookie is HttpOnly (Flask's default) and
    SameSite=Lax; Secure only when LAB_SESSION_COOKIE_SECURE=1, for an app served behind TLS
    (a Secure cookie is never sent over plain http, the lab's 127.0.0.1 servers).
    """
    if not app.config.get("SECRET_KEY"):
        key = os.environ.get("LAB_SECRET_KEY") or development_secret_key()
        if len(key) < SECRET_KEY_MIN_LENGTH:
            raise RuntimeError(f"LAB_SECRET_KEY is {len(key)} characters long: use at least {SECRET_KEY_MIN_LENGTH} "
                               f"random ones, e.g. python -c 'import secrets; print(secrets.token_urlsafe(32))'")
        app.config["SECRET_KEY"] = key
    if app.config.get("SESSION_COOKIE_SAMESITE") is None:
        app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    if os.environ.get("LAB_SESSION_COOKIE_SECURE") == "1":
        app.config["SESSION_COOKIE_SECURE"] = True


def development_secret_key(path: Path = DEVELOPMENT_KEY_PATH) -> str:
    """The key in `path`, made there first if absent: written to a temporary file and linked
    into place, so two workers starting at once end up reading the same key."""
    try:
        return path.read_text().strip()
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=".secret_key.", delete=False) as new:
        new.write(secrets.token_urlsafe(48))
    try:
        os.chmod(new.name, 0o600)
        os.link(new.name, path)  # fails if another process linked its key first: that one wins
    except FileExistsError:
        pass
    finally:
        os.unlink(new.name)
    return path.read_text().strip()


def _error(status: int, message: str, field: str | None, **extra: Any) -> tuple[Response | str, int]:
    if request.path.startswith("/api/"):
        return jsonify({"error": message, "field": field, **extra}), status
    return render_template("error.html", status=status, message=message, field=field), status


# ---- numbered pages (OFFSET): only the offset_pagination lesson serves these -------------

def offset_page_from(args: MultiDict[str, str]) -> tuple[queries.Filters, int]:
    """The filters and the `page` number (from 1) of a numbered-page request."""
    rest = MultiDict(args)
    rest.poplist("page")  # filters_from refuses parameters it does not know
    if "cursor" in rest:
        raise BadInput("cursor", "numbered pages take `page`, not a cursor")
    page_number = _int(args, "page", minimum=1, maximum=queries.MAX_OFFSET_PAGE) or 1
    return filters_from(rest), page_number


def offset_page_dict(page: queries.OffsetPage, filters: queries.Filters) -> dict[str, Any]:
    return {
        "items": [list_row_dict(row) for row in page.rows],
        "page": page.number,
        "next_page": page.number + 1 if page.has_more else None,
        "limit": filters.limit,
        "total": {"count": page.total, "capped": page.total_capped},
    }
