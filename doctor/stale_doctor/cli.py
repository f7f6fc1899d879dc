"""The `flask stale-doctor` commands: `report` and `probe`."""

from __future__ import annotations

import sys

import click
from flask import Flask, current_app
from flask.cli import AppGroup

from . import findings as findings_module
from . import probe as probe_module
from .report import render

command_group = AppGroup("stale-doctor", help="What the stale-data doctor found, and which layer is stale.")


def _state():  # type: ignore[no-untyped-def]
    state = current_app.extensions.get("stale_doctor")
    if state is None:
        raise click.UsageError("the app has no StaleDoctor: add `StaleDoctor(app, db)` to it")
    return state


@command_group.command("report")
@click.option("--file", "path", help="the findings file (default: STALE_DOCTOR_FILE)")
def report_command(path: str | None) -> None:
    """One block per cause: how often, where, the first proof, the cure, the lab's target."""
    path = path or _state().settings.file
    if not path:
        raise click.UsageError("no findings file: set STALE_DOCTOR_FILE (or pass --file)")
    try:
        found = findings_module.read_file(path)
    except FileNotFoundError:
        raise click.UsageError(f"{path} does not exist: the doctor has written no finding there yet") from None
    click.echo(render(found, path), nl=False)


@command_group.command("probe")
@click.argument("table")
@click.argument("row_id")
@click.option("--column", default="version", show_default=True, help="the column to compare")
@click.option("--url", required=True, help="a URL of the running app that shows the row")
def probe_command(table: str, row_id: str, column: str, url: str) -> None:
    """Which layer is stale for one row: database snapshot, identity map, cache or response cache."""
    state = _state()
    db_url = _database_url(state.db)
    try:
        result = probe_module.probe(current_app, db_url, table, row_id, column, url)
    except OSError as error:
        raise click.ClickException(f"could not read {url}: {error}") from None
    click.echo("\n".join(result.lines(table, row_id, column, url)))
    sys.exit(0 if result.stale_layer in ("none",) else 1)


def _database_url(db: object):  # type: ignore[no-untyped-def]
    """The URL of the app's database, from the db given to StaleDoctor (in the app context)."""
    engine = getattr(db, "engine", None)  # Flask-SQLAlchemy
    if engine is None:
        factory = getattr(db, "session_factory", db)  # scoped_session -> sessionmaker
        engine = getattr(factory, "kw", {}).get("bind")
    if engine is None and callable(db):  # a function returning the request's Session
        session = db()
        engine = session.get_bind()
    if engine is None:
        raise click.UsageError("cannot find the app's engine from the db given to StaleDoctor")
    return engine.url


def probe_hooks(app: Flask) -> None:
    if app.extensions["stale_doctor"].settings.probe:
        probe_module.install_hook(app)
