"""stale_doctor: tells which cause of stale data a Flask + SQLAlchemy app has.

    from stale_doctor import StaleDoctor
    StaleDoctor(app, db)

Findings go to the `stale_doctor` logger (and STALE_DOCTOR_FILE, JSONL); `flask stale-doctor
report` sums them up; `pytest -p stale_doctor.pytest_plugin --stale-doctor` runs a test suite
with the doctor. The causes are the stale-data lab's: each finding names its `make <cause>`.
"""

from .causes import CAUSES
from .config import ConfigError
from .extension import StaleDoctor
from .findings import Finding, StaleDataFound

__all__ = ["CAUSES", "ConfigError", "Finding", "StaleDataFound", "StaleDoctor"]
__version__ = "0.1.0"
