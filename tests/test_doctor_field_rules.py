"""Rules the field corrected (issue 20): blind writes are not lost updates, a job's open
transaction is judged without a request or an end, a cache hit nothing changed since is not a
view cache, a SQLite connection held across requests is checked for a replaced file, and
objects SQLAlchemy's statement cache keeps alive are not a global cache. Each shape is run buggy and clean; the clean side must have no finding at all.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy.orm import sessionmaker

from stale_doctor import StaleDoctor
from stale_doctor.findings import read_file

from .doctor_install import Install, install  # noqa: F401 (the fixture)
from .doctor_apps import memoized_details, profiles, relationship_filter, replaced_file, view_cached

ROOT = Path(__file__).resolve().parent.parent


def summary(doctor: StaleDoctor) -> list[tuple[str, str]]:
    return [(f.cause, f.proof) for f in doctor.findings]


# ---- lost_update: read-modify-write, not a timestamp touch ---------------------------------

def test_a_timestamp_touch_on_every_request_and_a_versioned_edit_are_clean(tmp_path: Path, install: Install) -> None:
    app = profiles.create_app(str(tmp_path / "p.db"), versioned=True)
    doctor = install(app, profiles.db)
    assert profiles.profile_flow(app) == [200, 200, 200, 200]
    client = app.test_client()
    assert client.post("/users/bob/visit").status_code == 200
    assert client.post("/users", data={"name": "carol", "about": "new here"}).status_code == 200
    assert doctor.findings == [], summary(doctor)


def test_a_row_the_request_inserted_then_set_from_the_form_is_no_lost_update(tmp_path: Path, install: Install) -> None:
    app = profiles.create_app(str(tmp_path / "p.db"), versioned=False)
    doctor = install(app, profiles.db)
    assert app.test_client().post("/users", data={"name": "carol", "about": "new here"}).status_code == 200
    assert doctor.findings == [], summary(doctor)


def test_an_edit_from_a_form_over_the_row_as_loaded_is_a_lost_update(tmp_path: Path, install: Install) -> None:
    app = profiles.create_app(str(tmp_path / "p.db"), versioned=False)
    doctor = install(app, profiles.db)
    assert profiles.profile_flow(app) == [200, 200, 200, 200]
    found = doctor.findings
    assert [f.cause for f in found] == ["lost_update"], summary(doctor)  # the edit; not the touches, not the token
    assert found[0].evidence["request"]["endpoint"] == "edit_profile"
    assert found[0].evidence["read_modify_write"] == {"about": "a value the request submitted"}
    assert found[0].evidence["changed"] == ["about"]  # the touch was committed on its own, before the view


def test_a_counter_computed_in_python_is_a_lost_update(tmp_path: Path, install: Install) -> None:
    app = profiles.create_app(str(tmp_path / "p.db"), versioned=False)
    doctor = install(app, profiles.db)
    assert app.test_client().post("/users/bob/visit").status_code == 200
    found = doctor.findings
    assert [f.cause for f in found] == ["lost_update"], summary(doctor)
    assert found[0].evidence["read_modify_write"] == {"visits": "a number changed from the one loaded (0 -> 1)"}


# ---- background_app_context: an app context pushed at import, a job that died open -----------

@pytest.mark.parametrize("mode", ["next-job", "exit", "clean"])
def test_a_job_transaction_left_open_in_an_import_time_app_context(tmp_path: Path, mode: str) -> None:
    findings = tmp_path / "findings.jsonl"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "doctor")])}
    done = subprocess.run([sys.executable, "-m", "tests.doctor_apps.import_time_worker", str(tmp_path / "w.db"),
                           str(findings), mode], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = read_file(str(findings)) if findings.exists() else []
    if mode == "clean":
        assert found == [], found
        return
    assert [f["cause"] for f in found] == ["background_app_context"], found
    proof = found[0]["proof"]
    assert "(app context of __main__), outside any request" in proof and "STALE_DOCTOR_JOB_MAX_SECONDS=0.5" in proof
    assert found[0]["evidence"]["transaction_age_seconds"] > 0.5


# ---- http_cache: a cache that answers after a commit it did not see ---------------------------

@pytest.mark.parametrize("store", ["flask_caching", "dict"])
@pytest.mark.parametrize("buggy", [True, False])
@pytest.mark.parametrize("hooked", [False, True])
def test_a_view_cache_after_an_edit(tmp_path: Path, install: Install, store: str, buggy: bool, hooked: bool) -> None:
    app = view_cached.create_app(str(tmp_path / "v.db"), store=store, invalidate=not buggy, hooked=hooked)
    doctor = install(app, view_cached.db)
    client = app.test_client()
    assert client.get("/notes").get_json() == ["first", "second"]
    assert client.get("/notes").get_json() == ["first", "second"]  # a hit of an unchanged answer: no finding
    assert doctor.findings == [], summary(doctor)
    assert client.post("/notes/1", data={"text": "edited"}).status_code == 200
    seen = client.get("/notes").get_json()
    if buggy:
        assert seen == ["first", "second"]
        assert [f.cause for f in doctor.findings] == ["http_cache"], summary(doctor)
        assert doctor.findings[0].evidence["request"]["endpoint"] == "notes"
    else:
        assert seen == ["edited", "second"]
        assert doctor.findings == [], summary(doctor)


def test_one_url_read_differently_by_two_people_is_no_view_cache(tmp_path: Path, install: Install) -> None:
    app = view_cached.create_app(str(tmp_path / "v.db"), store="dict", invalidate=False)
    doctor = install(app, view_cached.db)
    client = app.test_client()
    assert client.get("/board", headers={"X-Viewer": "ann"}).get_json()["viewer"] == "ann"
    assert client.post("/viewer", data={"name": "anne"}).status_code == 200
    assert client.get("/board").get_json()["viewer"] is None  # anonymous: the viewer's table is not read
    assert doctor.findings == [], summary(doctor)


def test_a_value_memoized_in_an_edit_holds_only_the_rows_read_for_it(tmp_path: Path, install: Install) -> None:
    """The rename reads the item, then memoizes its shelf's label (a miss, a read of the shelf, a
    set), then commits the item and deletes the item's key: the label holds no row of the item, so
    its later hits are served nothing the edit changed (a finding would blame the shelf's key)."""
    app = memoized_details.create_app(str(tmp_path / "m.db"), str(tmp_path / "cache"), buggy=False)
    doctor = install(app, memoized_details.db)
    client = app.test_client()
    assert client.post("/items/1/rename", json={"name": "renamed"}).get_json()["shelf"] == "top shelf"
    assert client.get("/shelves/1").get_json()["label"] == "top shelf"
    assert client.get("/items/1").get_json()["name"] == "renamed"
    assert doctor.findings == [], summary(doctor)


@pytest.mark.parametrize("buggy", [True, False])
def test_a_memoized_read_is_a_data_cache_not_a_view_cache(tmp_path: Path, install: Install, buggy: bool) -> None:
    """Hits of a memoized read, before and after an edit of another row, are not http_cache;
    with the mismatched key, the edit of the row read is cache_key_mismatch and nothing else."""
    app = memoized_details.create_app(str(tmp_path / "m.db"), str(tmp_path / "cache"), buggy=buggy)
    doctor = install(app, memoized_details.db)
    client = app.test_client()
    for _ in range(2):
        assert client.get("/items/1").get_json()["name"] == "first"
    assert client.post("/items/2/rename", json={"name": "second, renamed"}).status_code == 200
    assert client.get("/items/1").get_json()["name"] == "first"
    assert doctor.findings == [], summary(doctor)
    assert client.post("/items/1/rename", json={"name": "renamed"}).status_code == 200
    seen = client.get("/items/1").get_json()["name"]
    if buggy:
        assert seen == "first"
        assert [f.cause for f in doctor.findings] == ["cache_key_mismatch"], summary(doctor)
    else:
        assert seen == "renamed"
        assert doctor.findings == [], summary(doctor)


# ---- sqlite_file_replaced: a connection never checked in, made before the doctor ------------

@pytest.mark.parametrize("replaced", [True, False])
def test_a_connection_held_across_requests_reads_a_replaced_file(tmp_path: Path, install: Install,
                                                                 replaced: bool) -> None:
    path = str(tmp_path / "held.db")
    app = replaced_file.create_held_app(path)
    held = os.stat(path).st_ino
    doctor = install(app, sessionmaker(bind=app.extensions["engine"]))  # the app's other reads
    client = app.test_client()
    assert client.get("/things").json["things"][0] == "thing 0"  # the doctor first sees the connection here
    if replaced:
        replaced_file.replace(path, "renamed elsewhere")
    assert client.get("/things").json["things"][0] == "thing 0"  # the old file, through the held connection
    if not replaced:
        assert doctor.findings == [], summary(doctor)
        return
    assert [f.cause for f in doctor.findings] == ["sqlite_file_replaced"], summary(doctor)
    finding = doctor.findings[0]
    assert finding.evidence["connection_inode"] == held and finding.evidence["path_inode"] == os.stat(path).st_ino
    request = finding.evidence["request"]
    assert (request["method"], request["path"]) == ("GET", "/things")  # the second request, on the old file


# ---- global_cache: what SQLAlchemy's statement cache keeps alive is no app's cache -----------

@pytest.mark.parametrize("cached", [False, True])
def test_children_kept_alive_by_a_cached_relationship_filter(tmp_path: Path, install: Install, cached: bool) -> None:
    relationship_filter.WALLETS.clear()
    app = relationship_filter.create_app(str(tmp_path / "w.db"), cached=cached)
    doctor = install(app, app.extensions["sessionmaker"])
    client = app.test_client()
    for wallet in (1, 2, 1):
        assert client.get(f"/wallets/{wallet}").json["count"] == 2
    if not cached:
        assert doctor.findings == [], summary(doctor)
        return
    assert {f.cause for f in doctor.findings} == {"global_cache"}, summary(doctor)
    assert "WALLETS" in doctor.findings[0].proof
