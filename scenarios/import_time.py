"""import_time: values computed once in the process: the page's contact choices, a row's default.

Served by gunicorn with one sync worker, without --preload (create_app runs in the worker,
after the fork: the broken app's read at creation cannot also be pool_across_fork). The
scenario notes the wall-clock time (UTC) before it starts the server and when the server first
answers. Then bob adds two contacts through the API, each request timed (UTC) from before it
is sent to after its acknowledgement; alice opens the page and looks for them among its contact
choices; the auditor reads their rows, with their creation times, from the database.

Broken: the choices were read while the app was created, so the new contacts are missing from
them; and both rows carry one creation time from the app's start, before either request was
sent (the column default was `datetime.now(...)`, called at import). Fixed: both contacts are
offered, and each row's time lies inside its own request. The comparison is with the times the
scenario recorded (microseconds), so no sleep is needed. The staleness is in neither the ORM
nor the database (the rows are committed and read back exactly): it is in the process, in
values computed once (the judgement's staleness field says "none", the proof says where).
"""

from __future__ import annotations

import datetime as dt
import html
import re
from typing import Any

from sqlalchemy import select

from lab.harness.scenario import Cause, Scenario
from lab.harness.server import Actor
from lab.harness.verdicts import FRESH, INCONCLUSIVE, LOST, STALE, Judgement
from lab.models import Contact

CAUSE = Cause("import_time", "a contact added after the start never appears in the page's choices, "
                             "and every new row carries the app's start time")

NEW_CONTACTS = ("Desk added first", "Desk added second")
_CHOICE = re.compile(r'<option value="(\d+)">([^<]*)</option>')


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat()


def _t(stamp: str) -> dt.datetime:
    return dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def _clock(stamp: str) -> str:
    return _t(stamp).strftime("%H:%M:%S.%f")


def add_contact(s: Scenario, actor: Actor, name: str, expected: str) -> dict[str, Any]:
    """POST /api/contacts, timed in UTC from before sending to after the acknowledgement."""
    sent = _now()
    reply = actor.post_json("/api/contacts", {"name": name})
    acked = _now()
    ack: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "sent": sent, "acked": acked}
    if reply.status == 201:
        body = reply.json()
        ack.update(id=body["id"], created_at=body["created_at"])
        observed = f"201: contact {body['id']}, created_at {_clock(body['created_at'])} (sent {_clock(sent)}, acknowledged {_clock(acked)})"
    else:
        observed = f"{reply.status}: {reply.text[:160]}"
    s.step(actor.name, f"POST /api/contacts {name!r}", expected, observed, reply)
    return ack


def read_choices(s: Scenario, actor: Actor, expected: str, look_for: tuple[str, ...] = ()) -> dict[str, Any]:
    """GET the page; return its contact choices (the <datalist> the contact inputs offer)."""
    reply = actor.get("/transactions", limit="1")
    seen: dict[str, Any] = {"status": reply.status, "served_by": reply.served_by, "choices": {}}
    page = reply.text
    if reply.status == 200 and '<datalist id="contacts">' in page:
        datalist = page[page.index('<datalist id="contacts">'):]
        datalist = datalist[:datalist.index("</datalist>")]
        seen["choices"] = {name: int(i) for i, name in ((i, html.unescape(n)) for i, n in _CHOICE.findall(datalist))}
        present = [name for name in look_for if name in seen["choices"]]
        missing = [name for name in look_for if name not in seen["choices"]]
        observed = f"{len(seen['choices'])} contact choices"
        if look_for:
            observed += (f"; offered: {', '.join(map(repr, present)) or 'none of the new ones'}"
                         f"{'; missing: ' + ', '.join(map(repr, missing)) if missing else ''}")
    else:
        seen["status"] = 0 if reply.status == 200 else reply.status
        observed = f"HTTP {reply.status}: {page[:160]}"
    s.step(actor.name, "GET /transactions?limit=1 (the page's contact choices)", expected, observed, reply)
    return seen


def run(s: Scenario) -> dict[str, Any]:
    starting = _now()
    server = s.serve(workers=1)
    ready = _now()
    s.note(f"the app was started at {_clock(starting)} UTC and first answered at {_clock(ready)} UTC")
    alice, bob = s.actor("alice", server), s.actor("bob", server)
    before = read_choices(s, alice, "the seeded contacts")
    if any(event.startswith("-:") for event in s.steps[-1].transactions):
        s.note("the '-' transaction above ran outside any request: the app read the database while it was created")
    acks = [add_contact(s, bob, name, "201, committed, created_at between the request's sending and its acknowledgement")
            for name in NEW_CONTACTS]
    after = read_choices(s, alice, "both new contacts among the choices", NEW_CONTACTS)
    ids = [ack["id"] for ack in acks if "id" in ack]
    rows: dict[str, Any] = {}
    with s.engine().connect() as connection:
        for row_id, name, created in connection.execute(
                select(Contact.id, Contact.name, Contact.created_at).where(Contact.id.in_(ids)).order_by(Contact.id)):
            rows[str(row_id)] = {"name": name, "created_at": created.isoformat()}
    s.step("auditor", f"SELECT id, name, created_at FROM contacts WHERE id IN {tuple(ids)} (new connection)",
           "each row's created_at inside its own request",
           "; ".join(f"{r['name']!r} created_at {_clock(r['created_at'])}" for r in rows.values()) or "no rows")
    return {"starting": starting, "ready": ready, "before": before, "acks": acks, "after": after, "database": rows}


def judge(observations: dict[str, Any]) -> Judgement:
    before, acks, after, rows = observations["before"], observations["acks"], observations["after"], observations["database"]
    starting, ready = _t(observations["starting"]), _t(observations["ready"])
    if before["status"] != 200 or any(ack["status"] != 201 for ack in acks) or after["status"] != 200:
        return Judgement(INCONCLUSIVE, f"the setup failed: page HTTP {before['status']}/{after['status']}, "
                                       f"adds HTTP {[ack['status'] for ack in acks]}")
    missing_rows = [ack["id"] for ack in acks if str(ack["id"]) not in rows]
    if missing_rows:
        return Judgement(LOST, f"contacts {missing_rows} were acknowledged (201) but are not in the database")
    missing = [name for name in NEW_CONTACTS if name not in after["choices"]]
    # Each row's time against its own request's window, as the scenario's clock recorded it.
    outside = [(ack, rows[str(ack["id"])]) for ack in acks
               if not _t(ack["sent"]) <= _t(rows[str(ack["id"])]["created_at"]) <= _t(ack["acked"])]
    if missing or outside:
        parts = []
        if missing:
            parts.append(f"alice's page offered {len(after['choices'])} contact choices without "
                         f"{' and '.join(map(repr, missing))}, added and acknowledged (201) before she opened it")
        if outside:
            times = sorted({row["created_at"] for _, row in outside})
            same = len(outside) > 1 and len(times) == 1
            when = (f"from the app's start (started {_clock(observations['starting'])}, first answered "
                    f"{_clock(observations['ready'])})" if all(starting <= _t(t) <= ready for t in times)
                    else "outside the request that inserted it")
            parts.append(f"{'both rows carry one' if same else 'the rows carry a'} created_at "
                         f"{', '.join(_clock(t) for t in times)}, {when}, not the time of their inserts "
                         f"(sent from {_clock(outside[0][0]['sent'])})")
        return Judgement(STALE, "; ".join(parts) + ": values computed once in the process "
                                "(not in the ORM, not in the database)")
    return Judgement(FRESH, f"alice's page offered both new contacts, and each row's created_at lies inside "
                            f"its own request ({', '.join(_clock(r['created_at']) for r in rows.values())})")
