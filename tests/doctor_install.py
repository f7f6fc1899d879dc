"""`install`: StaleDoctor(app, db) on a test's app, closed at the end of the test (its listeners
are process-wide), for the doctor's tests on small apps of the shapes users write."""

from __future__ import annotations

from typing import Any, Callable, Iterator

import pytest
from flask import Flask

from stale_doctor import StaleDoctor
from stale_doctor.monitor import MONITOR

Install = Callable[[Flask, Any], StaleDoctor]


@pytest.fixture
def install() -> Iterator[Install]:
    doctors: list[StaleDoctor] = []

    def make(app: Flask, db: Any) -> StaleDoctor:
        app.testing = True
        doctor = StaleDoctor(app, db)
        doctors.append(doctor)
        doctor.clear()
        return doctor

    yield make
    for doctor in doctors:
        doctor.clear()
        doctor.close()
    assert not MONITOR.installed
