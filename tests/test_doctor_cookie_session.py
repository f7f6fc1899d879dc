"""The doctor on an app that keeps database values in Flask's cookie session (and its clean twin).

Both sides asserted: the buggy login is reported naming the session key and the columns the
values came from; the clean one (ids only), a value the user sent that equals a database
value, and Flask-Login's string `_user_id` are not.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import update

from tests.doctor_apps import cookie_session
from tests.test_doctor_apps import Install, causes, install, only  # noqa: F401 (install is a fixture)


@pytest.mark.parametrize("buggy", [True, False])
def test_database_values_copied_into_the_cookie_session(tmp_path: Path, install: Install, buggy: bool) -> None:  # noqa: F811
    app = cookie_session.create_app(str(tmp_path / "users.db"), buggy=buggy)
    doctor = install(app, cookie_session.db)
    client = app.test_client()
    assert client.post("/login", data={"email": "ada@example.org"}).status_code == 200
    with app.app_context():  # an admin grants a role from the CLI
        cookie_session.db.session.execute(update(cookie_session.User).values(role="admin"))
        cookie_session.db.session.commit()
    role = client.get("/me").get_json()["role"]
    if buggy:
        assert role == "user"  # the bug itself: the cookie's copy
        finding = only(doctor, "session_cookie_snapshot")
        assert causes(doctor) == ["session_cookie_snapshot"]
        assert finding.evidence["session_key"] == "user"
        assert finding.evidence["columns"] == ["users.name", "users.role"]
        assert "users.name 'Ada Lovelace' of row 1" in finding.proof and "session['user']['name']" in finding.proof
        assert finding.models == ("User",)
        assert finding.evidence["request"]["endpoint"] == "login"
    else:
        assert role == "admin"
        assert doctor.findings == []


def test_what_the_user_sent_is_not_a_copy(tmp_path: Path, install: Install) -> None:  # noqa: F811
    app = cookie_session.create_app(str(tmp_path / "users.db"), buggy=False)
    doctor = install(app, cookie_session.db)
    client = app.test_client()
    assert client.get("/search", query_string={"q": "Bob Builder"}).get_json() == [2]
    assert doctor.findings == []


def test_reading_the_session_alone_reports_nothing(tmp_path: Path, install: Install) -> None:  # noqa: F811
    """The finding is made where the copy is written, once; later reads load no row to compare."""
    app = cookie_session.create_app(str(tmp_path / "users.db"), buggy=True)
    doctor = install(app, cookie_session.db)
    client = app.test_client()
    client.post("/login", data={"email": "bob@example.org"})
    for _ in range(3):
        assert client.get("/me").status_code == 200
    assert [f.occurrences for f in doctor.findings] == [1]
