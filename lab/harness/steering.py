"""Send the next request to the worker or thread a scenario names, without hoping.

gunicorn gives a request to any idle worker (sync workers) or idle pool thread (gthread), and
an idle one is usually the one that served last. `Steering` keeps every slot (worker process
or thread) busy with a `/_lab/hold` request except the one the next step must reach, so that
slot is the only one that can answer. Holding *all* slots first also names them, because a
new hold can only land on a slot that is not yet held.

A hold ends by itself after `labmode.HOLD_LIMIT_SECONDS`: `valid_until()` says until when
the steering is certain; a scenario that must wait longer releases all and `retake()`s.
"""

from __future__ import annotations

import itertools
import time

from lab.harness.scenario import Hold, Scenario
from lab.harness.server import GunicornServer
from lab.labmode import HOLD_LIMIT_SECONDS


class SteeringFailed(RuntimeError):
    """A hold landed where it could not have if the server had the shape we assumed."""


class Steering:
    """Every slot of `server` held busy but at most one: the next request goes to that one."""

    _keys = itertools.count(1)  # hold keys name files in the scenario's control dir: never reuse one

    def __init__(self, s: Scenario, server: GunicornServer, slots: int, name: str = "slot") -> None:
        self.s, self.server, self.name = s, server, name
        self.holds: dict[str, Hold] = {}
        self.asked_at: dict[str, float] = {}  # when each current hold was requested (monotonic)
        self.free: str | None = None
        self._hold_all(slots)
        self.slots = list(self.holds)  # in the order they were first held: slots[0], slots[1], ...

    def _hold_all(self, slots: int) -> None:
        for _ in range(slots):
            asked_at, hold = self._hold()
            if hold.served_by in self.holds:
                raise SteeringFailed(f"two holds landed on {hold.served_by}: fewer than {slots} {self.name}s")
            self.holds[hold.served_by], self.asked_at[hold.served_by] = hold, asked_at

    def _hold(self) -> tuple[float, Hold]:
        asked_at = time.monotonic()
        return asked_at, self.s.hold(self.server, f"{self.name}-{next(self._keys)}")

    def valid_until(self) -> float:
        """Until this monotonic time every current hold is certainly still in place."""
        return min((self.asked_at[slot] for slot in self.holds), default=float("inf")) + HOLD_LIMIT_SECONDS

    def only(self, slot: str) -> None:
        """Leave `slot` as the only idle one (hold the previously idle slot again first)."""
        if slot not in self.slots:
            raise SteeringFailed(f"unknown {self.name} {slot}; known: {', '.join(self.slots)}")
        if self.free == slot:
            return
        if self.free is not None:
            asked_at, hold = self._hold()  # the only idle slot takes it
            if hold.served_by != self.free:
                raise SteeringFailed(f"a hold meant for the idle {self.free} landed on {hold.served_by}")
            self.holds[self.free], self.asked_at[self.free] = hold, asked_at
        self.holds.pop(slot).release()
        del self.asked_at[slot]
        self.free = slot
        self.s.note(f"every {self.name} but {slot} is held busy, so the next request goes to {slot}")

    def release_all(self) -> None:
        for hold in self.holds.values():
            hold.release()
        self.holds.clear()
        self.asked_at.clear()
        self.free = None

    def retake(self) -> None:
        """After `release_all`: hold every slot again; they must be the same slots as before."""
        self._hold_all(len(self.slots))
        if set(self.holds) != set(self.slots):
            raise SteeringFailed(f"the {self.name}s changed: {sorted(self.slots)} became {sorted(self.holds)}")
