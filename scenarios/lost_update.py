"""lost_update: two edits from the same page view; both are acknowledged, one label is gone.

Steps: alice and bob both read the newest row (both see version 1). alice saves her label
(200, version 2). bob, still looking at version 1, saves his. The auditor reads the row from the
database; alice reloads the list. The broken edit ignores the version bob sent, so it
overwrites alice's label and answers 200: alice's acknowledged write is LOST. The fixed edit
refuses bob's (409, nothing changed), so bob can reload and decide.
Staleness: bob's view (version 1) is the only old thing, and it is old on purpose: that is
what every lost update needs. The server side holds nothing old (each edit loads the current
row in a fresh session); the loss comes from not checking the version bob saw.
"""

from __future__ import annotations

from typing import Any

from lab.harness.scenario import Cause, Scenario
from lab.harness.steps import audit_row, edit_label, read_newest
from lab.harness.verdicts import FRESH, INCONCLUSIVE, LOST, Judgement

CAUSE = Cause("lost_update", "two people edit one label; both are told it worked, one label silently disappears")

ALICE_LABEL = "rent (alice)"
BOB_LABEL = "salary (bob)"


def run(s: Scenario) -> dict[str, Any]:
    server = s.serve(workers=1)
    alice, bob = s.actor("alice", server), s.actor("bob", server)
    alice_saw = read_newest(s, alice, "the row as seeded, version 1")
    bob_saw = read_newest(s, bob, "the same row, version 1")
    alice_ack = edit_label(s, alice, alice_saw["id"], ALICE_LABEL, alice_saw["version"], "200 with version 2")
    bob_ack = edit_label(s, bob, bob_saw["id"], BOB_LABEL, bob_saw["version"],
                         "409: the row changed since bob's version 1; nothing changed")
    database = audit_row(s, s.engine(), alice_saw["id"], f"version {alice_ack.get('version')}, label {ALICE_LABEL!r}")
    alice_after = read_newest(s, alice, f"her label {ALICE_LABEL!r}")
    return {"alice_saw": alice_saw, "bob_saw": bob_saw, "alice_ack": alice_ack, "bob_ack": bob_ack,
            "database": database, "alice_after": alice_after}


def judge(observations: dict[str, Any]) -> Judgement:
    alice_saw, bob_saw = observations["alice_saw"], observations["bob_saw"]
    alice_ack, bob_ack, database = observations["alice_ack"], observations["bob_ack"], observations["database"]
    if alice_saw["status"] != 200 or bob_saw["status"] != 200 or alice_saw["version"] != bob_saw["version"]:
        return Judgement(INCONCLUSIVE, "alice and bob did not both see the same version of the row")
    if alice_ack["status"] != 200:
        return Judgement(INCONCLUSIVE, f"alice's edit was not acknowledged (HTTP {alice_ack['status']})")
    if bob_ack["status"] == 200 and database["label"] != ALICE_LABEL:
        return Judgement(LOST, f"alice's label {ALICE_LABEL!r} was acknowledged as version {alice_ack['version']}, "
                               f"then bob's edit from version {bob_saw['version']} was also acknowledged (version "
                               f"{bob_ack['version']}): the database has {database['label']!r}, alice's label is gone")
    if bob_ack["status"] == 409 and database["label"] == ALICE_LABEL and database["version"] == alice_ack["version"]:
        return Judgement(FRESH, f"alice's edit won (version {alice_ack['version']}); bob's, from version "
                                f"{bob_saw['version']}, got 409 and changed nothing")
    return Judgement(INCONCLUSIVE, f"unexpected outcome: bob got HTTP {bob_ack['status']}, the database has "
                                   f"version {database['version']} with label {database['label']!r}")
