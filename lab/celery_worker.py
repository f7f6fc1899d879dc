"""The Celery worker's entry point (Flask's `make_celery.py`): the app named by LAB_APP_MODULE.

`celery -A lab.celery_worker worker --pool=solo -Q <queue>` builds that module's Flask app,
with the same configuration as the web app (LAB_DATABASE_URL, LAB_BROKER_URL, ...), and runs
its Celery app. The module is found by name at run time: the ground imports no app variant.
"""

from __future__ import annotations

import importlib
import os

flask_app = importlib.import_module(os.environ.get("LAB_APP_MODULE", "fixed.app")).create_app()
celery = flask_app.extensions.get("celery")
if celery is None:
    raise RuntimeError("no broker configured: set LAB_BROKER_URL (redis://... or sqla+sqlite:////abs/broker.db)")
