"""One vocabulary of verdicts, used by scenarios, results, the matrix, notebooks and the report."""

from __future__ import annotations

from dataclasses import dataclass

STALE = "STALE"  # a read older than an acknowledged write
LOST = "LOST"  # an acknowledged write that is not in the database
CRASH = "CRASH"  # errors caused by the bug
SHARED_CONNECTION = "SHARED_CONNECTION"  # two processes on one server connection
FRESH = "FRESH"  # correct
NOT_APPLICABLE = "N/A"  # only where the expected matrix allows it, with the reason
INCONCLUSIVE = "INCONCLUSIVE"  # the run could not decide; fails `make reproduce`
HOLDS = "HOLDS"  # a myth's claim is true here
DOES_NOT_HOLD = "DOES NOT HOLD"  # a myth's claim is false here

APP_VERDICTS = (STALE, LOST, CRASH, SHARED_CONNECTION, FRESH)
MYTH_VERDICTS = (HOLDS, DOES_NOT_HOLD)
ALL = APP_VERDICTS + MYTH_VERDICTS + (NOT_APPLICABLE, INCONCLUSIVE)

# Where a stale read comes from, said with every verdict.
IN_ORM = "orm"  # an object held by something (cache, identity map, variable) was not reloaded
IN_DATABASE = "database"  # the read ran in a transaction whose snapshot predates the write
NOWHERE = "none"


@dataclass(frozen=True)
class Judgement:
    verdict: str
    proof: str  # one line, plain words: "reader saw version 1 after version 2 was acknowledged"
    staleness: str = NOWHERE

    def __post_init__(self) -> None:
        if self.verdict not in ALL:
            raise ValueError(f"unknown verdict {self.verdict!r}; known: {', '.join(ALL)}")
