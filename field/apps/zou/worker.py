"""Zou's RQ worker in burst mode, with the doctor installed from outside.

As `rq worker --burst -w zou.app.utils.job_worker.ZouWorker -c zou.job_settings` runs it:
`zou.job_settings` builds the app once (and disposes its engine, since every job runs in a fork),
the doctor is given that app and Zou's `db`, and the worker forks a work horse per queued job
until the queue is empty. Run by the driver's "the job worker runs the queued events" step.
"""

from __future__ import annotations

import redis
from rq import Queue

from stale_doctor import StaleDoctor


def main() -> None:
    from zou import job_settings  # the worker's settings module: builds the app, as `-c zou.job_settings` does
    from zou.app import db
    from zou.app.utils.job_worker import ZouWorker

    StaleDoctor().init_app(job_settings.app, db)
    connection = redis.Redis(host=job_settings.REDIS_HOST, port=int(job_settings.REDIS_PORT),
                             db=job_settings.REDIS_DB, password=job_settings.REDIS_PASSWORD)
    ZouWorker([Queue(connection=connection)], connection=connection).work(burst=True)


if __name__ == "__main__":
    main()
