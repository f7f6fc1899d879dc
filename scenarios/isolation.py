"""python -m scenarios.isolation --db sqlite|postgresql|mariadb|all: the isolation-level probe.

No CAUSE here on purpose: the scenario runner collects every module of this package that
has one, and this is a measurement table, not a cause. The probe is lab/harness/isolation.py.
"""

from __future__ import annotations

import sys

if __name__ == "__main__":
    from lab.harness.isolation import main

    sys.exit(main())
