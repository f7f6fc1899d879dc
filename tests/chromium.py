"""Debian's headless Chromium under Selenium, for the tests that look at pages as a user does.

The same browser the scenarios drive (lab/harness/browser.py: its flags, a fresh profile per
run, always stopped). CI installs it (`.ci/run`); a machine without it fails the tests that
need it, never skips them.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

import pytest

from lab.harness.browser import CHROMEDRIVER, CHROMIUM, INSTALL, Browser


@contextmanager
def chromium() -> Iterator[Any]:
    """A started Chromium's WebDriver, quit (with its profile) when the block ends."""
    missing = [str(path) for path in (CHROMIUM, CHROMEDRIVER) if not path.exists()]
    if missing:
        pytest.fail(f"{' and '.join(missing)} missing: this test needs Debian's Chromium and its driver; "
                    f"run `{INSTALL}`", pytrace=False)
    with Browser() as browser:
        yield browser.driver
