"""The stale-data doctor on small apps of the shapes users write (tests/doctor_apps/).

Each test runs the buggy app and asserts the doctor's finding, and runs the clean twin and
asserts there is none, so no test passes by the doctor staying quiet or by it always talking.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
import weakref
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask, signals
from sqlalchemy import event, select

import stale_doctor
from stale_doctor import ConfigError, StaleDataFound, StaleDoctor
from stale_doctor.findings import Finding
from stale_doctor.monitor import MONITOR

from .doctor_install import Install, install  # noqa: F401 (the fixture)
from .doctor_apps import (celery_notify, rq_notify, forked_pool, fsa_factory, locking_counter, memoized_details, module_session,
                          per_thread_session, refreshed_cache, replaced_file, replica_routing, thread_scoped)



def causes(doctor: StaleDoctor) -> list[str]:
    return [f.cause for f in doctor.findings]


def only(doctor: StaleDoctor, cause: str) -> Finding:
    found = [f for f in doctor.findings if f.cause == cause]
    assert found, f"no {cause} finding; the doctor found {causes(doctor)}"
    return found[0]


def assert_request(finding: Finding, method: str, path: str, endpoint: str) -> None:
    request = finding.evidence["request"]
    assert (request["method"], request["path"], request["endpoint"]) == (method, path, endpoint)


def fsa_app(tmp_path: Path, name: str, *, buggy: bool, **config: Any) -> Flask:
    return fsa_factory.create_app(str(tmp_path / f"{name}.db"), buggy=buggy, **config)


# ---- 1. thread-local scoped_session ---------------------------------------------------------

def test_thread_local_scoped_session_not_removed(tmp_path: Path, install: Install) -> None:
    app = thread_scoped.create_app(str(tmp_path / "bug.db"), remove=False)
    doctor = install(app, app.extensions["db_session"])
    client = app.test_client()
    assert client.get("/things").status_code == 200
    assert client.get("/things").status_code == 200
    finding = only(doctor, "scoped_session_not_removed")
    assert "remove()" in finding.proof
    assert_request(finding, "GET", "/things", "things")


def test_thread_local_scoped_session_removed_is_clean(tmp_path: Path, install: Install) -> None:
    app = thread_scoped.create_app(str(tmp_path / "clean.db"), remove=True)
    doctor = install(app, app.extensions["db_session"])
    client = app.test_client()
    for _ in range(3):
        assert client.get("/things").status_code == 200
    assert doctor.findings == []


# ---- 2. Flask-SQLAlchemy factory + blueprint ------------------------------------------------

@pytest.mark.parametrize("buggy", [True, False])
def test_fsa_global_cache(tmp_path: Path, install: Install, buggy: bool) -> None:
    app = fsa_app(tmp_path, "cache", buggy=buggy)
    doctor = install(app, fsa_factory.db)
    client = app.test_client()
    first = client.get("/items/cached")
    second = client.get("/items/cached")
    assert first.status_code == second.status_code == 200
    if buggy:
        finding = only(doctor, "global_cache")
        assert "Item" in finding.models
        assert "_CACHE" in (finding.evidence.get("held_by") or ""), finding.evidence
    else:
        assert doctor.findings == []


@pytest.mark.parametrize("buggy", [True, False])
def test_fsa_flush_without_commit(tmp_path: Path, install: Install, buggy: bool) -> None:
    app = fsa_app(tmp_path, "flush", buggy=buggy)
    doctor = install(app, fsa_factory.db)
    assert app.test_client().post("/items", data={"name": "kept?"}).status_code == 201
    if buggy:
        finding = only(doctor, "uncommitted")
        assert "items" in finding.evidence["tables"]
        assert_request(finding, "POST", "/items", "items.create")
    else:
        assert doctor.findings == []


@pytest.mark.parametrize("offset", [20, 0])
def test_fsa_offset_pagination(tmp_path: Path, install: Install, offset: int) -> None:
    app = fsa_app(tmp_path, "page", buggy=True)
    doctor = install(app, fsa_factory.db)
    assert app.test_client().get(f"/items/page?offset={offset}").status_code == 200
    if offset:
        finding = only(doctor, "offset_pagination")
        assert finding.evidence["offset"] == 20
        assert_request(finding, "GET", "/items/page?offset=20", "items.page")
    else:
        assert doctor.findings == []


@pytest.mark.parametrize("buggy", [True, False])
def test_fsa_lost_update(tmp_path: Path, install: Install, buggy: bool) -> None:
    app = fsa_app(tmp_path, "rename", buggy=buggy)
    doctor = install(app, fsa_factory.db)
    response = app.test_client().post("/items/3/rename", data={"name": "renamed", "version": "1"})
    assert response.status_code == 200
    if buggy:
        finding = only(doctor, "lost_update")
        assert finding.models == ("Item",)
        assert finding.evidence["changed"] == ["name"]
        assert_request(finding, "POST", "/items/3/rename", "items.rename")
    else:
        assert doctor.findings == []
    with app.app_context():
        assert fsa_factory.db.session.get(fsa_factory.Item, 3).name == "renamed"



@pytest.mark.parametrize("buggy", [True, False])
def test_locking_read_of_an_object_already_loaded(db_url: str, backend: str, install: Install, buggy: bool) -> None:
    """identity_map: load, then SELECT ... FOR UPDATE without populate_existing, then write.
    On SQLite no FOR UPDATE is sent (no row locks; the cause cannot happen there): no
    identity_map finding (the doctor reports the unlocked read-modify-write as lost_update)."""
    app = locking_counter.create_app(db_url, buggy=buggy)
    locking_counter.setup(app)
    try:
        doctor = install(app, locking_counter.db)
        response = app.test_client().post("/counters/1/increment")
        assert response.status_code == 200 and response.get_json()["hits"] == 1
        if buggy and backend != "sqlite":
            finding = only(doctor, "identity_map")
            assert finding.models == ("Counter",)
            assert finding.evidence["changed"] == ["hits"]
            assert finding.evidence["loaded_values"] == {"hits": 0}
            assert finding.evidence["loaded_at_statement"] < finding.evidence["locked_at_statement"]
            assert "populate_existing" in finding.proof
            assert_request(finding, "POST", "/counters/1/increment", "increment")
        elif backend == "sqlite":
            assert "identity_map" not in causes(doctor)
        else:
            assert doctor.findings == []
    finally:
        locking_counter.teardown(app)

@pytest.mark.parametrize("buggy", [True, False])
def test_fsa_browser_cache_headers(tmp_path: Path, install: Install, buggy: bool) -> None:
    # Headers that let the browser reuse a response built from tables: browser_cache (a cache in
    # the client), not http_cache (a cache in the server: the view ran its SQL here).
    app = fsa_app(tmp_path, "headers", buggy=buggy)
    doctor = install(app, fsa_factory.db)
    response = app.test_client().get("/items/headers")
    assert response.status_code == 200
    if buggy:
        finding = only(doctor, "browser_cache")
        assert finding.evidence["cache_control"] == "max-age=60"
        assert "items" in finding.evidence["tables"]
        assert "http_cache" not in causes(doctor)
    else:
        assert response.headers["Cache-Control"] == "no-store"
        assert doctor.findings == []


@pytest.mark.parametrize("buggy", [True, False])
def test_fsa_browser_cache_etag_answered_304_after_a_write(tmp_path: Path, install: Install, buggy: bool) -> None:
    app = fsa_app(tmp_path, "tagged", buggy=buggy)
    doctor = install(app, fsa_factory.db)
    client = app.test_client()
    first = client.get("/items/tagged")
    assert first.status_code == 200 and first.headers["ETag"]
    # The client revalidates before anything changed: 304 is right, on both sides.
    assert client.get("/items/tagged", headers={"If-None-Match": first.headers["ETag"]}).status_code == 304
    assert doctor.findings == []
    assert client.post("/items/tagged", data={"name": "added"}).status_code == 201
    again = client.get("/items/tagged", headers={"If-None-Match": first.headers["ETag"]})
    if buggy:
        assert again.status_code == 304  # the client keeps the list without the added item
        finding = only(doctor, "browser_cache")
        assert finding.evidence["written"] == ["items"]
        assert finding.evidence["validator"] == f"etag:{first.get_etag()[0]}"
        assert "304" in finding.proof
        assert_request(finding, "GET", "/items/tagged", "items.tagged")
    else:
        assert again.status_code == 200 and again.json[0] == "added"
        assert doctor.findings == []


# ---- 3. one app context around several requests (a test suite) ------------------------------

def test_app_context_around_requests_is_wrong_scope(tmp_path: Path, install: Install) -> None:
    app = fsa_app(tmp_path, "ctx", buggy=False)
    doctor = install(app, fsa_factory.db)
    client = app.test_client()
    with app.app_context():
        assert client.get("/items").status_code == 200
        assert client.get("/items").status_code == 200
    finding = only(doctor, "scoped_session_wrong_scope")
    assert "app context" in finding.proof
    assert finding.evidence["scope_key"] == "the app context"


def test_requests_without_outer_app_context_are_clean(tmp_path: Path, install: Install) -> None:
    app = fsa_app(tmp_path, "noctx", buggy=False)
    doctor = install(app, fsa_factory.db)
    client = app.test_client()
    for _ in range(3):
        assert client.get("/items").status_code == 200
    assert doctor.findings == []


# ---- 4. a module-level Session --------------------------------------------------------------

@pytest.mark.parametrize("shared", [True, False])
def test_module_level_session_is_shared(tmp_path: Path, install: Install, shared: bool) -> None:
    app = module_session.create_app(str(tmp_path / "shared.db"), shared=shared)
    doctor = install(app, app.extensions["session_getter"])
    client = app.test_client()
    assert client.get("/things").status_code == 200
    assert client.get("/things").status_code == 200
    if shared:
        finding = only(doctor, "shared_session")
        assert "tests.doctor_apps.module_session.SESSION" in finding.proof
        assert finding.evidence["module_global"] == "tests.doctor_apps.module_session.SESSION"
        assert_request(finding, "GET", "/things", "things")
    else:
        assert doctor.findings == []


# ---- 5. background jobs ---------------------------------------------------------------------

@pytest.mark.parametrize("commits", [False, True])
def test_job_leaving_its_transaction_open(tmp_path: Path, install: Install, commits: bool) -> None:
    app = fsa_app(tmp_path, "job", buggy=False)
    doctor = install(app, fsa_factory.db)
    db = fsa_factory.db
    with app.app_context():
        with doctor.job("sync"):
            items = db.session.scalars(select(fsa_factory.Item)).all()
            items[0].name = "synced"
            if commits:
                db.session.commit()
            else:
                db.session.flush()
        if not commits:
            db.session.rollback()
    if commits:
        assert doctor.findings == []
    else:
        finding = only(doctor, "background_app_context")
        assert "sync" in finding.proof
        assert finding.evidence["job"]["job"] == "sync"


@pytest.mark.parametrize("commits", [False, True])
def test_app_context_transaction_older_than_job_limit(tmp_path: Path, install: Install, commits: bool) -> None:
    app = fsa_app(tmp_path, "age", buggy=False, STALE_DOCTOR_JOB_MAX_SECONDS=0.2)
    doctor = install(app, fsa_factory.db)
    db = fsa_factory.db
    with app.app_context():
        db.session.scalars(select(fsa_factory.Item)).all()
        if commits:
            db.session.commit()
        time.sleep(0.4)
        db.session.scalars(select(fsa_factory.Item)).all()
    if commits:
        assert doctor.findings == []
    else:
        finding = only(doctor, "background_app_context")
        assert "STALE_DOCTOR_JOB_MAX_SECONDS=0.2" in finding.proof
        assert finding.evidence["transaction_age_seconds"] >= 0.4


# ---- 6. long_transaction by age -------------------------------------------------------------

@pytest.mark.parametrize("kept", [True, False])
def test_kept_per_thread_session_long_transaction(tmp_path: Path, install: Install, kept: bool) -> None:
    app = per_thread_session.create_app(str(tmp_path / "long.db"), kept=kept)
    app.config["STALE_DOCTOR_TRANSACTION_MAX_SECONDS"] = 0.2
    doctor = install(app, app.extensions["session_getter"])
    client = app.test_client()
    try:
        assert client.get("/things").status_code == 200
        time.sleep(0.3)
        assert client.get("/things").status_code == 200
    finally:
        kept_session = app.extensions["thread_local"].__dict__.pop("session", None)
        if kept_session is not None:
            kept_session.close()
    if kept:
        finding = only(doctor, "long_transaction")
        assert finding.evidence["transaction_age_seconds"] >= 0.3
        assert finding.evidence["transaction_began_in"]["endpoint"] == "things"
        assert "shared_session" not in causes(doctor)
    else:
        assert doctor.findings == []


# ---- 7. a pool across fork ------------------------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("dispose", [False, True])
def test_pool_across_fork(tmp_path: Path, install: Install, dispose: bool) -> None:
    app = forked_pool.create_app(str(tmp_path / "fork.db"))
    findings_file = tmp_path / "findings.jsonl"
    app.config["STALE_DOCTOR_FILE"] = str(findings_file)
    doctor = install(app, app.extensions["sessionmaker"])
    client = app.test_client()
    assert client.get("/things").status_code == 200  # the parent's pool now holds a connection
    assert app.extensions["engine"].pool.checkedin() == 1
    pid = os.fork()
    if pid == 0:  # the child: always leaves through os._exit
        code = 1
        try:
            if dispose:
                forked_pool.dispose_in_child(app)
            code = 0 if app.test_client().get("/things").status_code == 200 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    records = [json.loads(line) for line in findings_file.read_text().splitlines()] if findings_file.exists() else []
    if dispose:
        assert records == []
    else:
        assert [r["cause"] for r in records] == ["pool_across_fork"]
        assert records[0]["evidence"]["created_by_pid"] == os.getpid()
        assert records[0]["evidence"]["checked_out_by_pid"] == pid
        assert records[0]["evidence"]["request"]["endpoint"] == "things"
    assert doctor.findings == []  # nothing happened in the parent


@pytest.mark.parametrize("watch_file", [False, True])
def test_sqlite_file_replaced(tmp_path: Path, install: Install, watch_file: bool) -> None:
    path = str(tmp_path / "synced.db")
    app = replaced_file.create_app(path, watch_file=watch_file)
    doctor = install(app, app.extensions["sessionmaker"])
    client = app.test_client()
    assert client.get("/things").json["things"][0] == "thing 0"  # the pool now holds a connection
    held = os.stat(path).st_ino
    replaced_file.replace(path, "renamed elsewhere")
    assert os.stat(path).st_ino != held
    served = client.get("/things").json["things"][0]
    if watch_file:
        assert served == "renamed elsewhere"
        assert causes(doctor) == []
    else:
        assert served == "thing 0"  # the old file, read through the connection opened before the rename
        finding = only(doctor, "sqlite_file_replaced")
        assert causes(doctor) == ["sqlite_file_replaced"]
        assert finding.evidence["path"] == path
        assert finding.evidence["connection_inode"] == held
        assert finding.evidence["path_inode"] == os.stat(path).st_ino
        assert finding.evidence["pid"] == os.getpid()
        assert_request(finding, "GET", "/things", "things")
        assert f"inode {held}" in finding.proof


# ---- 8. robustness --------------------------------------------------------------------------

def test_internal_error_is_logged_once_and_the_app_goes_on(tmp_path: Path, install: Install,
                                                           monkeypatch: pytest.MonkeyPatch,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    app = fsa_app(tmp_path, "oops", buggy=False)
    install(app, fsa_factory.db)

    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("detector bug")

    monkeypatch.setattr(stale_doctor.responses, "check_response", broken)
    monkeypatch.setattr(MONITOR, "_failed", set())  # "once" is per process: start from none
    client = app.test_client()
    with caplog.at_level(logging.ERROR, logger="stale_doctor"):
        assert client.get("/items").status_code == 200
        assert client.get("/items").status_code == 200
    errors = [r for r in caplog.records if r.name == "stale_doctor" and "internal error" in r.getMessage()]
    assert len(errors) == 1
    assert "detector bug" in (errors[0].exc_text or "")


def test_init_errors(tmp_path: Path, install: Install) -> None:
    app = fsa_app(tmp_path, "init", buggy=False)
    with pytest.raises(TypeError, match="db is required"):
        StaleDoctor(app, None)
    install(app, fsa_factory.db)
    with pytest.raises(RuntimeError, match="already installed"):
        StaleDoctor(app, fsa_factory.db)
    loud = fsa_app(tmp_path, "loud", buggy=False, STALE_DOCTOR_MODE="loud")
    with pytest.raises(ConfigError, match="STALE_DOCTOR_MODE"):
        StaleDoctor(loud, fsa_factory.db)
    assert "stale_doctor" not in loud.extensions


@pytest.mark.parametrize("allow", [["uncommitted"], []])
def test_allowlist_suppresses_a_cause(tmp_path: Path, install: Install, allow: list[str]) -> None:
    app = fsa_app(tmp_path, "allow", buggy=True, STALE_DOCTOR_ALLOW=allow)
    doctor = install(app, fsa_factory.db)
    assert app.test_client().post("/items", data={"name": "x"}).status_code == 201
    assert causes(doctor) == ([] if allow else ["uncommitted"])


@pytest.mark.parametrize("offset", [20, 0])
def test_raise_mode(tmp_path: Path, install: Install, offset: int) -> None:
    app = fsa_app(tmp_path, "raise", buggy=True, STALE_DOCTOR_MODE="raise")
    install(app, fsa_factory.db)
    client = app.test_client()
    if offset:
        with pytest.raises(StaleDataFound) as raised:
            client.get(f"/items/page?offset={offset}")
        assert [f.cause for f in raised.value.findings] == ["offset_pagination"]
    else:
        assert client.get("/items/page?offset=0").status_code == 200


def test_findings_file_has_one_line_per_finding(tmp_path: Path, install: Install) -> None:
    path = tmp_path / "findings.jsonl"
    app = fsa_app(tmp_path, "file", buggy=True, STALE_DOCTOR_FILE=str(path))
    doctor = install(app, fsa_factory.db)
    client = app.test_client()
    assert client.get("/items/page?offset=20").status_code == 200
    assert client.get("/items/headers").status_code == 200
    assert client.get("/items").status_code == 200  # clean: adds no line
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert sorted(r["cause"] for r in records) == sorted(causes(doctor)) == ["browser_cache", "offset_pagination"]
    for record in records:
        assert {"cause", "proof", "evidence", "subject", "occurrences"} <= record.keys()
        assert record["occurrences"] == 1
        assert record["evidence"]["request"]["method"] == "GET"


def test_no_strong_references_to_sessions_or_objects(tmp_path: Path, install: Install) -> None:
    app = fsa_app(tmp_path, "refs", buggy=False)
    doctor = install(app, fsa_factory.db)
    refs: list[weakref.ReferenceType[Any]] = []

    def loaded(target: Any, context: Any) -> None:
        refs.append(weakref.ref(target))

    def finished(sender: Flask, response: Any, **_: Any) -> None:
        refs.append(weakref.ref(fsa_factory.db.session()))

    event.listen(fsa_factory.Item, "load", loaded)
    signals.request_finished.connect(finished, app, weak=False)
    try:
        assert app.test_client().get("/items").status_code == 200
    finally:
        signals.request_finished.disconnect(finished, app)
        event.remove(fsa_factory.Item, "load", loaded)
    assert len(refs) == 31  # the request's 30 items, and its session (alive when the response was sent)
    gc.collect()
    assert [r for r in refs if r() is not None] == []
    assert doctor.findings == []


# ---- import_time: values computed once, at import or while the app is created ----------------

@pytest.mark.parametrize("buggy", [True, False])
def test_values_computed_at_creation(tmp_path: Path, install: Install, buggy: bool) -> None:
    from .doctor_apps import frozen_at_creation

    doctors: list[StaleDoctor] = []
    app = frozen_at_creation.create_app(str(tmp_path / f"blog-{buggy}.db"), buggy=buggy,
                                        install=lambda app, db: doctors.append(install(app, db)))
    doctor = doctors[0]
    client = app.test_client()
    assert client.get("/choices").get_json() == ["news", "howto"]
    assert client.post("/categories", data={"name": "tips"}).status_code == 201
    offered = client.get("/choices").get_json()
    first = client.post("/posts", data={"title": "one"}).get_json()
    second = client.post("/posts", data={"title": "two"}).get_json()
    if buggy:
        assert "tips" not in offered and first["created_at"] == second["created_at"]  # the bug itself
        assert set(causes(doctor)) == {"import_time"}, [f.proof for f in doctor.findings]
        read = next(f for f in doctor.findings if f.subject == "creation-read@categories")
        assert "created" in read.proof and "INSERT on categories" in read.proof
        assert "in create_app" in read.evidence["read_at_creation"]["location"]
        assert_request(read, "POST", "/categories", "add_category")
        constant = next(f for f in doctor.findings if f.subject == "constant-default@posts.created_at")
        assert "not a callable" in constant.proof and constant.models == ("BuggyPost",)
    else:
        assert "tips" in offered and first["created_at"] != second["created_at"]
        assert doctor.findings == []


def test_a_default_that_returns_one_time_for_every_row_is_seen_by_its_value(tmp_path: Path, install: Install) -> None:
    """A function default that returns a time computed once, at import: no constant in the mapper
    to see, so the doctor judges the value it gave (older than the app); the clean twin above
    (`default=utc_now`) gives every row its own time and is not reported."""
    from .doctor_apps import frozen_at_creation

    doctors: list[StaleDoctor] = []
    app = frozen_at_creation.create_app(str(tmp_path / "wrapped.db"), buggy=False, wrapped=True,
                                        install=lambda app, db: doctors.append(install(app, db)))
    client = app.test_client()
    first = client.post("/posts", data={"title": "one"}).get_json()
    second = client.post("/posts", data={"title": "two"}).get_json()
    assert first["created_at"] == second["created_at"]
    finding = only(doctors[0], "import_time")
    assert "older than the app itself" in finding.proof and finding.evidence["column"] == "posts.created_at"
    assert set(causes(doctors[0])) == {"import_time"}


# ---- replica_lag: a read on a streaming replica behind the client's own commit ----------------

@pytest.fixture(scope="module", params=("postgresql", "mariadb"))
def replica_urls(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """(primary, replica) URLs of a private database with one setting, applied on the lab's replica."""
    from sqlalchemy import create_engine
    from sqlalchemy.exc import DBAPIError

    from lab import databases, replica

    backend = request.param

    def unavailable(error: Exception) -> None:
        if backend in databases.required_backends():
            pytest.fail(f"required backend unavailable: {error}", pytrace=False)
        pytest.skip(str(error))

    try:
        url = databases.private_database(backend, f"lab_drep_{databases.owner_tag('main')}",
                                         tmp_path_factory.mktemp("drep"))
        watcher_url = replica.replica_url(databases.server_url(backend).render_as_string(hide_password=False))
    except databases.BackendUnavailable as error:
        unavailable(error)
    replica_routing.seed(url)
    primary, watcher = create_engine(url), create_engine(watcher_url, isolation_level="AUTOCOMMIT")
    try:
        with primary.connect() as on_primary, watcher.connect() as on_standby:
            replica.wait_for_replay(on_standby, replica.primary_position(on_primary), timeout=15)
    except DBAPIError as error:
        unavailable(databases.BackendUnavailable(f"the replica does not answer: {error.orig}"))
    finally:
        primary.dispose()
        watcher.dispose()
    yield url, replica.replica_url(url)
    databases.drop_database(url)


@pytest.mark.parametrize("buggy", [True, False])
def test_read_on_a_lagging_replica_after_the_clients_own_write(replica_urls: tuple[str, str], install: Install,
                                                               buggy: bool) -> None:
    from stale_doctor import replicas

    from lab import replica

    app = replica_routing.create_app(*replica_urls, buggy=buggy)
    doctor = install(app, app.extensions["session"])
    client = app.test_client()
    try:
        value = f"saved {'buggy' if buggy else 'clean'} {time.time():.6f}"
        assert client.get("/settings/1").status_code == 200  # a read before any write: never reported
        assert doctor.findings == []
        assert client.post("/settings/1", data={"value": value}).get_json() == {"saved": value}
        shown = client.get("/settings/1").get_json()["value"]  # at once: the replica applies 1 s behind
        if buggy:
            assert shown != value  # the stale read the finding must explain
            finding = only(doctor, "replica_lag")
            assert finding.evidence["tables"] == ["settings"]
            assert_request(finding, "GET", "/settings/1", "show")
            if replica.backend_of(replica_urls[0]) == "postgresql":
                assert finding.evidence["replay_behind_commit_seconds"] > 0
                assert "hot standby" in finding.proof and "in recovery" in finding.proof
            else:  # the commit's own GTID, not yet in the replica's applied position
                gtid = finding.evidence["commit_positions"]["settings"]
                assert not replicas.applied(gtid, finding.evidence["replayed_position"]), finding.evidence
                assert "read-only, following a primary" in finding.proof and "MASTER_GTID_WAIT" in finding.proof
        else:
            assert shown == value
            assert doctor.findings == []
        engines = app.extensions["engines"]
        with engines["primary"].connect() as on_primary, engines["replica"].connect() as on_standby:
            replica.wait_for_replay(on_standby, replica.primary_position(on_primary), timeout=15)
        doctor.clear()
        assert app.test_client().get("/settings/1").get_json()["value"] == value  # replayed: fresh, and quiet
        assert doctor.findings == []
    finally:
        for engine in app.extensions["engines"].values():
            engine.dispose()


def test_a_gtid_is_applied_when_the_replica_holds_its_domain_at_or_past_its_sequence_number() -> None:
    from stale_doctor.replicas import applied, parse_gtids

    assert parse_gtids("0-1-42,1-2-7") == {0: 42, 1: 7} and parse_gtids("") == {}
    assert applied("0-1-42", "0-1-42") and applied("0-1-42", "0-1-43,1-2-1")
    assert not applied("0-1-42", "0-1-41") and not applied("0-1-5", "0-1-4") and not applied("1-2-3", "0-1-99")
    assert not applied("0-1-42", "")  # a replica that has applied nothing


# ---- a task queue: enqueue_before_commit ------------------------------------------------------

@pytest.mark.parametrize("core", [False, True])
@pytest.mark.parametrize("buggy", [True, False])
def test_task_sent_before_commit(tmp_path: Path, install: Install, buggy: bool, core: bool) -> None:
    app = celery_notify.create_app(str(tmp_path / "orders.db"), buggy=buggy)
    doctor = install(app, celery_notify.db)
    path = "/orders/2/ship" + ("?core=1" if core else "")
    assert app.test_client().post(path).status_code == 200
    if buggy:
        finding = only(doctor, "enqueue_before_commit")
        assert finding.evidence["task"] == "orders.shipped" and finding.evidence["tables"] == [("orders" if core else "shipments")]
        assert finding.evidence["task_id"] and "tests.doctor_apps.celery_notify" in finding.evidence["location"]
        assert "sent task 'orders.shipped'" in finding.proof and "not committed" in finding.proof
        assert_request(finding, "POST", path, "ship")
    else:
        assert doctor.findings == []
    with app.app_context():
        session = celery_notify.db.session
        assert session.get(celery_notify.Order, 2).status == "shipped" if core else session.get(celery_notify.Shipment, 1)


def test_task_sent_after_a_read_only_is_clean(tmp_path: Path, install: Install) -> None:
    app = celery_notify.create_app(str(tmp_path / "orders.db"), buggy=True)
    doctor = install(app, celery_notify.db)
    assert app.test_client().get("/orders/1/remind").status_code == 200
    assert doctor.findings == []


def test_the_doctor_does_not_need_celery(monkeypatch: pytest.MonkeyPatch) -> None:
    from stale_doctor import tasks

    assert tasks.publish_signals()  # celery is installed here: its publish signal is watched
    monkeypatch.setitem(__import__("sys").modules, "celery", None)  # as if it were not installed
    assert tasks.publish_signals() == []


@pytest.fixture
def rq_queue_name() -> Iterator[str]:
    """A queue of the test's own on the lab's Redis (LAB_TEST_BROKER_URL, started by `make services`)."""
    from redis import Redis
    from rq import Queue

    name = f"lab-doctor-test-{os.getpid()}-{time.monotonic_ns()}"
    yield name
    Queue(name, connection=Redis.from_url(REDIS_URL)).delete(delete_jobs=True)


REDIS_URL = os.environ.get("LAB_TEST_BROKER_URL", "redis://127.0.0.1:6379/7")


@pytest.mark.parametrize("many", [False, True])
@pytest.mark.parametrize("buggy", [True, False])
def test_rq_job_enqueued_before_commit(tmp_path: Path, install: Install, rq_queue_name: str, buggy: bool,
                                       many: bool) -> None:
    """RQ has no publish signal: the doctor wraps Queue.enqueue_job / enqueue_many, as sentry-python does."""
    app = rq_notify.create_app(str(tmp_path / "orders.db"), REDIS_URL, rq_queue_name, buggy=buggy)
    doctor = install(app, rq_notify.db)
    path = "/orders/2/ship" + ("?many=1" if many else "")
    assert app.test_client().post(path).status_code == 200
    if buggy:
        finding = only(doctor, "enqueue_before_commit")
        assert finding.evidence["task"] == "tests.doctor_apps.rq_notify.shipped"
        assert finding.evidence["tables"] == ["shipments"]
        assert many or finding.evidence["task_id"]  # enqueue_many's jobs get their ids inside RQ, after the check
        assert "tests.doctor_apps.rq_notify" in finding.evidence["location"]
        assert_request(finding, "POST", path, "ship")
    else:
        assert doctor.findings == []
    assert app.extensions["rq"].count == 1  # the job was enqueued either way: the wrapper changes nothing


def test_rq_synchronous_queue_is_not_judged(tmp_path: Path, install: Install, rq_queue_name: str) -> None:
    """`Queue(is_async=False)` runs the job at once in the same thread: no worker can run before the commit."""
    app = rq_notify.create_app(str(tmp_path / "orders.db"), REDIS_URL, rq_queue_name, buggy=True, is_async=False)
    doctor = install(app, rq_notify.db)
    assert app.test_client().post("/orders/2/ship").status_code == 200
    assert doctor.findings == []


def test_rq_methods_are_put_back_when_the_doctor_goes(tmp_path: Path, rq_queue_name: str) -> None:
    from rq import Queue

    original = Queue.enqueue_job
    app = rq_notify.create_app(str(tmp_path / "orders.db"), REDIS_URL, rq_queue_name, buggy=True)
    doctor = StaleDoctor(app, rq_notify.db)
    try:
        assert Queue.enqueue_job is not original and Queue.enqueue_job.__wrapped__ is original
    finally:
        doctor.close()
    assert Queue.enqueue_job is original and not MONITOR.installed


# ---- a refresher thread started before a fork ------------------------------------------------

@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
@pytest.mark.parametrize("buggy,pool_thread", [(True, False), (True, True), (False, False)])
def test_prefork_refresher(tmp_path: Path, install: Install, buggy: bool, pool_thread: bool) -> None:
    """pool_thread: the child serves from a thread it starts, as gunicorn's gthread worker does; glibc
    gives that thread the dead refresher's stack, so its ident is the one the refresher had."""
    app = refreshed_cache.create_app(str(tmp_path / "cache.db"), buggy=buggy)
    findings_file = tmp_path / "findings.jsonl"
    app.config["STALE_DOCTOR_FILE"] = str(findings_file)
    doctor = install(app, app.extensions["sessionmaker"])
    cache = app.extensions["cache"]
    try:
        # The parent serves first, so both apps have their refresher running in it when it forks.
        assert app.test_client().get("/names").status_code == 200
        assert any(t.name == refreshed_cache.THREAD_NAME for t in threading.enumerate())
        pid = os.fork()
        if pid == 0:  # the child: always leaves through os._exit
            code = 1
            try:
                client = app.test_client()
                statuses: list[int] = []
                serve = lambda: statuses.extend(client.get("/names").status_code for _ in range(2))  # noqa: E731
                if pool_thread:
                    worker = threading.Thread(target=serve)
                    worker.start()
                    worker.join()
                else:
                    serve()
                code = 0 if statuses == [200, 200] else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        cache.stop.set()
    records = [json.loads(line) for line in findings_file.read_text().splitlines()] if findings_file.exists() else []
    if buggy:
        assert [r["cause"] for r in records] == ["prefork_refresher"]  # once per process, not per request
        evidence = records[0]["evidence"]
        assert evidence["pid"] == pid and evidence["parent_pid"] == os.getpid()
        assert [t["name"] for t in evidence["lost_threads"]] == [refreshed_cache.THREAD_NAME]
        assert "refreshed_cache" in evidence["lost_threads"][0]["runs"] and "loop" in evidence["lost_threads"][0]["runs"]
        assert records[0]["evidence"]["request"]["endpoint"] == "names"
    else:
        assert records == []  # the child's first request started its own refresher
    assert doctor.findings == []  # nothing happened in the parent


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_prefork_refresher_ignores_threads_of_libraries(tmp_path: Path, install: Install) -> None:
    app = refreshed_cache.create_app(str(tmp_path / "cache.db"), buggy=False)
    findings_file = tmp_path / "findings.jsonl"
    app.config["STALE_DOCTOR_FILE"] = str(findings_file)
    install(app, app.extensions["sessionmaker"])
    stop = threading.Event()
    library = threading.Thread(target=stop.wait, name="a library's timer", daemon=True)  # threading's own code
    library.start()
    try:
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                code = 0 if app.test_client().get("/names").status_code == 200 else 2
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
    finally:
        stop.set()
        app.extensions["cache"].stop.set()
    assert not findings_file.exists() or findings_file.read_text() == ""
# ---- cache_key_mismatch: a memoized read and an invalidation that build two keys -------------

@pytest.mark.parametrize("buggy", [True, False])
def test_memoized_read_and_its_invalidation_build_other_keys(tmp_path: Path, install: Install, buggy: bool) -> None:
    cache_dir = str(tmp_path / "cache")
    reader_app = memoized_details.create_app(str(tmp_path / "memo.db"), cache_dir, buggy=buggy)
    editor_app = memoized_details.create_app(str(tmp_path / "memo.db"), cache_dir, buggy=buggy)
    reader_doctor, editor_doctor = install(reader_app, memoized_details.db), install(editor_app, memoized_details.db)
    reader, editor = reader_app.test_client(), editor_app.test_client()
    assert reader.get("/items/1").get_json()["name"] == "first"
    assert reader.get("/items/2").get_json()["name"] == "second"
    editor.post("/items/2/rename", json={"name": "second, renamed"})  # another row: no finding for row 1
    assert reader.get("/items/1").get_json()["name"] == "first"
    assert editor.post("/items/1/rename", json={"name": "renamed"}).get_json()["name"] == "renamed"
    seen = reader.get("/items/1").get_json()["name"]
    assert reader_doctor.findings == editor_doctor.findings  # one process: the findings are kept once
    mismatches = [f for f in reader_doctor.findings if f.cause == "cache_key_mismatch"]
    if buggy:
        assert seen == "first"
        assert len(mismatches) == 1, [f.proof for f in mismatches]
        finding = mismatches[0]
        assert_request(finding, "GET", "/items/1", "details")
        assert finding.evidence["row"] == "memo_items:1"
        assert finding.evidence["key_served"] not in finding.evidence["keys_deleted"]
        assert "POST /items/1/rename" in finding.evidence["edited_by"]
    else:
        assert seen == "renamed"
        assert mismatches == []
