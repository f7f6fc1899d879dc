"""The consultant's answer to the client, point by point, from the latest runs (`reports/answer.md`).

The client's crypto-transactions page "does not always reflect the latest database changes,
even after `db.session.remove()` and `db.session.expire_all()`". A first draft answered in the
eleven points of reporting/claims.py. Each point is kept, corrected or dropped by the
verdict its claim gets from the stored scenario results and claims measurements (the same
code as the claims_check notebook), put in the client's terms: their page, their session
handling. It ends with what to check in their own code, cause by cause (the doctor's own list
of causes and cures), and how to run the doctor on it. Verdicts, servers and dates come from
the runs; the words around them are fixed, and none of them is a figure.
"""

from __future__ import annotations

from typing import Any

from lab import databases
from reporting import claims
from reporting.reportdoc import Bullets, Para, Section, Table

# Each point of the draft answer as it bears on the client's page and session handling (words
# only: whether it is kept, corrected or dropped is the run's verdict).
FOR_YOUR_PAGE: dict[int, str] = {
    1: "If your page's code keeps Transaction objects (or a list of them) in a module-level variable, a class "
       "attribute or an in-process cache, every worker serves what it loaded then.",
    2: "If your app creates one Session at import (or keeps one on the app object) and every request uses it, "
       "your page reads inside a transaction that never ends.",
    3: "If an edit of a transaction answers success after `db.session.flush()` (or after changing an object) "
       "without `db.session.commit()`, the change is rolled back when the request ends.",
    4: "If your app builds its own `scoped_session` (rather than Flask-SQLAlchemy's `db.session`), look at its "
       "scope function and at where `remove()` is called; and whether anything connects before gunicorn forks.",
    5: "Your page calls `db.session.remove()`: it ends the session, but Transaction objects your code kept from "
       "before it are not refreshed.",
    6: "Your page calls `db.session.expire_all()`: on your database and isolation level, it reloads inside the "
       "same transaction.",
    7: "Calling `remove()` and `expire_all()` on your page treats symptoms; a session per request with no "
       "object kept across requests makes both unnecessary.",
    8: "The other code paths that \"look right\" (an admin script, a worker, another view) end their transaction, "
       "and that is what makes their reads fresh.",
    9: "A `flush()` elsewhere in your code does not make your page's next read fresh.",
    10: "With Flask-SQLAlchemy's `db.session`, each request of your web server gets its own session, removed at "
        "its end; a CLI command, a worker loop or a test inside one pushed app context shares one.",
    11: "Any long loop, report or external call your page (or a job) runs inside one session holds one old "
        "snapshot, locks and a pooled connection for its whole length.",
}

ACTION_WORDS = {"kept": "Kept", "corrected": "Corrected", "dropped": "Dropped"}


def servers(results: Any) -> str:
    """The backends the answer's runs used, as the results name them (SQLite 3.x, PostgreSQL 15.x...)."""
    return ", ".join(results.server_name(b) for b in results.backends_with_results()) or "no backend"


def seen_cells(results: Any) -> dict[str, list[claims.Seen]]:
    """The stored cells each claim reads, by cause."""
    wanted = {cause for causes in claims.SCENARIOS.values() for cause in causes}
    found: dict[str, list[claims.Seen]] = {}
    for (cause, _app, _backend), result in sorted(results.cells.items()):
        if cause in wanted:
            found.setdefault(cause, []).append(claims.Seen.from_result(result))
    return found


def _measured_on(observed: dict[str, bool], names: dict[str, str]) -> str:
    """"yes on SQLite 3.40.1 and MariaDB 10.11.19; no on PostgreSQL 15.20"."""
    parts = []
    for value in (True, False):
        on = [names.get(b, b) for b in databases.BACKENDS if observed.get(b) is value]
        if on:
            parts.append(f"{'yes' if value else 'no'} on {' and '.join(on) if len(on) < 3 else ', '.join(on)}")
    return "; ".join(parts)


def point_section(settled: claims.Settled, names: dict[str, str]) -> Section:
    action = settled.action
    section = Section(f"answer-{settled.number}", f"{settled.number}. {ACTION_WORDS[action]}: {settled.claim}")
    verdict = f"The claim **{settled.verdict}**" + (f" ({settled.checked_only})" if settled.checked_only else "")
    section.add(Para(f"{verdict}, so this point is **{action}**. {FOR_YOUR_PAGE[settled.number]}"))
    section.add(Bullets([f"{s.text}? The draft says {'yes' if s.claim_says else 'no'}; measured: "
                         f"{_measured_on(s.observed, names)} ({s.mark})." for s in settled.statements]))
    say = {"kept": "What we tell you", "corrected": "What we tell you instead", "dropped": "Why it is dropped, and what holds"}
    section.add(Para(f"**{say[action]}:** {settled.corrected}"))
    behind = ", ".join(f"`make {c}`" for c in settled.causes) if settled.causes else \
        "the in-process measurement of `notebooks/claims_check.ipynb`"
    section.add(Para(f"Run behind it: {behind}.", "note"))
    return section


def check_your_code_section() -> Section:
    """What to look for in their own code: every cause the lab reproduces, with its cure (the doctor's list)."""
    from stale_doctor.causes import CAUSES

    section = Section("answer-check", "What to check in your own code")
    section.add(Para("Each cause below reproduces the symptom you describe in a page like yours; the lab runs a broken "
                     "and a fixed copy of each (`make <cause>`, the notebook of the same name). For your page, check "
                     "them in this order: where your code keeps ORM objects, how sessions are created and ended, "
                     "what commits, and what sits between the database and the browser (replicas, caches)."))
    section.add(Table(["cause", "what it looks like", "the cure"],
                      [[f"`{info.name}`", info.title, info.cure] for info in CAUSES.values()]))
    return section


def doctor_section() -> Section:
    section = Section("answer-doctor", "Running the doctor on your app")
    section.add(Para("The lab's stale-data doctor is a Flask extension that watches your app's requests, jobs, "
                     "sessions, transactions, pooled connections and ORM objects and names the cause it sees, with "
                     "the request, the line of your code and a one-line proof:"))
    section.add(Bullets([
        "`pip install <this repository>` (it brings only Flask and SQLAlchemy), then, where the app is made: "
        "`from stale_doctor import StaleDoctor` and `StaleDoctor(app, db)`.",
        "Run your page as usual (or your tests: `pytest -p stale_doctor.pytest_plugin --stale-doctor`), with "
        "`STALE_DOCTOR_FILE=stale-doctor.jsonl` to keep the findings.",
        "`flask stale-doctor report` sums them up per cause; each names the notebook that explains it and the cure.",
    ]))
    return section


def answer_sections(results: Any, measured: dict[str, Any] | None) -> list[Section]:
    """The answer, as sections for the HTML report and for answer.md."""
    names = {b: results.server_name(b) for b in databases.BACKENDS}
    settled = claims.settle_all(seen_cells(results), (measured or {}).get("backends") or {})
    started = sorted(r.get("started_at", "") for r in results.cells.values() if r.get("started_at"))
    period = f"from runs made between {started[0][:16].replace('T', ' ')} and {started[-1][:16].replace('T', ' ')} UTC" \
        if started else "from no stored run"
    intro = Section("answer-intro", "Your question, and how we answered it")
    intro.add(Para("You asked why your crypto-transactions page does not always reflect the latest database changes, "
                   "even after calling `db.session.remove()` and `db.session.expire_all()`. Our first draft answered "
                   "in eleven points. We have since reproduced each of them in a lab: a transactions page like yours, "
                   "in a broken and a fixed copy, run side by side on " + servers(results) + " (" + period + "). "
                   "Each point below is kept, corrected or dropped by what those runs measured.", "lead"))
    counts = {action: [str(s.number) for s in settled if s.action == action] for action in ("kept", "corrected", "dropped")}
    intro.add(Bullets([f"{ACTION_WORDS[a]}: {len(n)} (point{'s' if len(n) != 1 else ''} {', '.join(n)})" if n
                       else f"{ACTION_WORDS[a]}: none" for a, n in counts.items()]))
    missing = sorted(set(claims.CLAIMS) - {s.number for s in settled})
    if missing:
        intro.add(Para(f"Not settled, for want of a stored run: point{'s' if len(missing) > 1 else ''} "
                       f"{', '.join(map(str, missing))} (`make report` runs what is missing).", "note"))
    points = Section("answer-points", "The eleven points", [point_section(s, names) for s in settled])
    return [intro, points, check_your_code_section(), doctor_section()]
