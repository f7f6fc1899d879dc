"""One scenario per cause and myth: each module has CAUSE, run(s) and judge(observations).

The harness (lab/harness/) runs a scenario module it is given and never imports this package:
scenarios stand on the harness, and what runs them all (`python -m scenarios`, the notebooks,
the report) finds them here.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

from lab.harness.runner import load_expected
from lab.harness.scenario import Cause


def scenario_modules() -> dict[str, ModuleType]:
    """Every scenario in scenarios/, by cause name, in the order of the expected matrix."""
    found: dict[str, ModuleType] = {}
    for info in pkgutil.iter_modules(__path__):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        if isinstance(getattr(module, "CAUSE", None), Cause):
            found[module.CAUSE.name] = module
    order = list(load_expected())
    return dict(sorted(found.items(), key=lambda item: order.index(item[0]) if item[0] in order else len(order)))
