"""The WSGI entry gunicorn serves in the field: the app as its factory builds it, with the doctor.

`gunicorn field.runtime.wsgi:application`, with FIELD_APP, FIELD_WORKDIR, FIELD_BACKEND,
FIELD_DB_URL and FIELD_INJECT in the environment (set by `field.runtime.drive`). The app is
built here once per process that imports this module: in each worker, or once in the master
with --preload (then what the injection did at creation is inherited by every worker, as in
the real bug).
"""

from __future__ import annotations

import os
from pathlib import Path

from .driver import Backend
from .drive import build_with_doctor, load_driver
from .inject import INJECTIONS

_driver = load_driver(os.environ["FIELD_APP"], Path(os.environ["FIELD_WORKDIR"]),
                      Backend(os.environ.get("FIELD_BACKEND", "sqlite"), os.environ.get("FIELD_DB_URL") or None))
_injection = os.environ.get("FIELD_INJECT") or None
_run = build_with_doctor(_driver, _injection)
if _injection:
    INJECTIONS[_injection].steps(_run)  # installs what the injection adds to the served app
application = _run.app
