"""privacyIDEA (`pip install privacyIDEA`): a multi-factor authentication server with a JSON API.

Shape: Flask 3 with Flask-SQLAlchemy 3 (`privacyidea.models.db`, one session per app context,
removed at teardown), the app factory `privacyidea.app.create_app`, a REST API authenticated by
a JWT in the `Authorization` header, paginated lists (tokens, audit log), an audit log written
through an engine and `scoped_session` of its own, an in-process config cache, and a periodic
task runner (`privacyidea-cron`). Run on PostgreSQL by default (MariaDB and SQLite also).

What an operator does, and this driver does the same: a `pi.cfg` with the database URL and the
key files, then the app's own CLI (`pi-manage setup create_enckey`, `create_audit_keys`,
`create_tables`, `pi-manage admin add`); tokens are enrolled through the API as the web UI
does; a person logs in as the admin and uses the web UI's calls.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from field.runtime.driver import Driver as Base
from field.runtime.flow import Client, Page, Step

TOKENS = 25
PAGE = "pagesize=10"


def serial(i: int) -> str:
    return f"FIELD{i:04d}"


class Driver(Base):
    name = "privacyidea"
    distribution = "privacyIDEA"
    package = "privacyidea"
    backends = ("postgresql", "mariadb", "sqlite")
    read_step = "list the tokens"
    read_path = f"/token/?{PAGE}&page=1"
    write_step = "edit a token's description"

    _auth: dict[str, str] = {}

    @property
    def config_file(self) -> Path:
        return self.workdir / "pi.cfg"

    def _url(self) -> str:
        return self.backend.url or f"sqlite:///{self.workdir / 'privacyidea.sqlite'}"

    def _manage(self, *args: str) -> None:
        pi_manage = Path(sys.executable).with_name("pi-manage")
        subprocess.run([str(pi_manage), *args], check=True, capture_output=True, text=True,
                       env={**os.environ, "PRIVACYIDEA_CONFIGFILE": str(self.config_file)})

    def prepare(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        w = self.workdir
        self.config_file.write_text(
            f"SQLALCHEMY_DATABASE_URI = {self._url()!r}\n"
            f"SECRET_KEY = 'field-run-secret-key-not-for-production-use'\n"
            f"PI_PEPPER = 'field-run-pepper-not-for-production-use'\n"
            f"PI_ENCFILE = {str(w / 'enckey')!r}\n"
            f"PI_AUDIT_KEY_PRIVATE = {str(w / 'private.pem')!r}\n"
            f"PI_AUDIT_KEY_PUBLIC = {str(w / 'public.pem')!r}\n"
            f"PI_LOGFILE = {str(w / 'privacyidea.log')!r}\n"
            "PI_LOGLEVEL = 30\n")
        os.environ["PRIVACYIDEA_CONFIGFILE"] = str(self.config_file)
        self._manage("setup", "create_enckey")
        self._manage("setup", "create_audit_keys")
        self._manage("setup", "create_tables")
        self._manage("admin", "add", "admin", "-p", "admin123", "-e", "admin@example.org")
        subprocess.run([sys.executable, "-c", "from field.apps.privacyidea.driver import enrol; enrol()"],
                       check=True, capture_output=True, text=True, env=dict(os.environ))

    def build(self) -> Any:
        from privacyidea.app import create_app

        return create_app("production", config_file=str(self.config_file), silent=True)

    def sessions(self, app: Any) -> Any:
        from privacyidea.models import db

        return db

    def model_class(self, app: Any) -> type:
        from privacyidea.models import Token

        return Token

    def sqlite_path(self) -> Path | None:
        return None if self.backend.url else self.workdir / "privacyidea.sqlite"

    def job(self, app: Any) -> None:
        """One run of `privacyidea-cron run_scheduled`: the periodic tasks due on this node."""
        import click
        from privacyidea.cli.tools.cron import run_scheduled

        with click.Context(run_scheduled, info_name="privacyidea-cron") as context:  # its CLI's context, as cron runs it
            context.invoke(run_scheduled, cron_mode=True)

    # ---- a person's use -------------------------------------------------------------------------

    def login(self, client: Client) -> Page:
        page = client.post("/auth", json_body={"username": "admin", "password": "admin123"})
        if page.status == 200:
            self._auth = {"Authorization": page.json()["result"]["value"]["token"]}
        return page

    def _get(self, path: str) -> Any:
        return lambda client: client.get(path, headers=self._auth)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return lambda client: client.post(path, json_body=body, headers=self._auth)

    def _delete(self, path: str) -> Any:
        return lambda client: client.request("DELETE", path, headers=self._auth)

    def flow(self) -> list[Step]:
        return [
            Step("log in as admin", self.login),
            Step("list the tokens", self._get(self.read_path)),
            Step("open page 2 of the token list", self._get(f"/token/?{PAGE}&page=2")),
            Step("search tokens by description", self._get(f"/token/?{PAGE}&description=*seven*")),
            Step("open a token", self._get(f"/token/?serial={serial(3)}")),
            Step("enrol a new token", self._post("/token/init", {
                "type": "spass", "serial": "FIELDNEW", "description": "a new token", "genkey": 1})),
            Step("edit a token's description", self._post(f"/token/description/{serial(5)}",
                                                           {"description": "edited description five"})),
            Step("open the edited token", self._get(f"/token/?serial={serial(5)}")),
            Step("disable a token", self._post(f"/token/disable/{serial(6)}", {})),
            Step("set a token's info field", self._post(f"/token/info/{serial(7)}/location", {"value": "desk 7"})),
            Step("delete the new token", self._delete("/token/FIELDNEW")),
            Step("change a system setting", self._post("/system/setConfig", {"splitAtSign": "0"})),
            Step("read the system settings", self._get("/system/")),
            Step("create a policy", self._post("/policy/field-webui", {
                "scope": "webui", "action": "logout_time=300", "active": True})),
            Step("list the policies", self._get("/policy/")),
            Step("delete the policy", self._delete("/policy/field-webui")),
            Step("read page 2 of the audit log", self._get("/audit/?page_size=5&page=2")),
        ]


def enrol() -> None:
    """The tokens an admin enrolled before the person's visit (through the API, as the web UI does)."""
    driver = Driver(Path(os.environ["PRIVACYIDEA_CONFIGFILE"]).parent, None)  # type: ignore[arg-type]
    client = driver.build().test_client()
    auth = {"Authorization": client.post("/auth", json={"username": "admin", "password": "admin123"})
            .get_json()["result"]["value"]["token"]}
    words = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
    for i in range(1, TOKENS + 1):
        body = {"type": "spass", "serial": serial(i), "genkey": 1, "description": f"token {words[i % 10]}"}
        response = client.post("/token/init", json=body, headers=auth)
        assert response.status_code == 200, response.get_data(as_text=True)
