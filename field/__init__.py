"""The doctor in the field: real Flask + SQLAlchemy apps nobody here wrote (issue 20).

`make doctor-field` installs each app of the corpus (`corpus.py`) from the package registry
into a venv of its own, from its own lock (`apps/<app>/requirements.lock`; the lab's lock is
never touched), and runs, inside that venv, `field.runtime.drive`: the app is built by its own
factory, the doctor is installed from outside (`StaleDoctor().init_app(app, db)` on what the
factory returned: their files are never edited, their code never copied here), and a scripted
flow does what a person does in it. Two things are measured:

- precision: every finding on the clean flows, in the test client and under gunicorn with
  workers, goes into a table with its verdict (`verdicts.json`: a real cause of stale data in
  that app, or a false alarm, and why). Target: no false alarm.
- recall: each cause the app's shape allows is injected at run time (`runtime/inject.py`:
  monkeypatching, wrapping a view, swapping a session registry), the flow that shows it is
  run, and the finding must name that cause. Target: >= 95 % found, each miss said with why.

Layers: `field/` stands on the doctor alone; the code under `runtime/` and `apps/*/driver.py`
runs in the apps' venvs and imports only the standard library, Flask, SQLAlchemy, the doctor
and the app itself.
"""
