# The stale-data bug-lab. `make help` lists the targets.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
DB ?= sqlite
CAUSE ?=
PORT ?= 8000
SIZE ?= 2000

# The cause registry is the scenarios/ folder: one module per cause or myth (the runner
# finds them the same way); every one gets a make target of its own.
NOT_CAUSES := __init__ __main__ isolation
CAUSES := $(filter-out $(NOT_CAUSES),$(basename $(notdir $(wildcard scenarios/*.py))))

# The URLs that `make services` creates; a server that does not answer is skipped by the
# tests unless LAB_REQUIRE_BACKENDS=all (CI) makes it an error.
export LAB_TEST_POSTGRESQL_URL ?= postgresql+psycopg://lab:lab@127.0.0.1:5432/lab_test
export LAB_TEST_MARIADB_URL ?= mysql+pymysql://lab:lab@127.0.0.1:3306/lab_test
export LAB_TEST_POSTGRESQL_REPLICA_URL ?= postgresql+psycopg://lab:lab@127.0.0.1:5433/lab_test
export LAB_TEST_MARIADB_REPLICA_URL ?= mysql+pymysql://lab:lab@127.0.0.1:3307/lab_test
export LAB_TEST_BROKER_URL ?= redis://127.0.0.1:6379/7

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	@# The doctor (doctor/stale_doctor) is importable in the lab's venv from its source tree;
	@# users install it with `pip install <this repository>` (pyproject.toml), without the lab.
	echo "$(CURDIR)/doctor" > "$$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')/stale-doctor-lab.pth"
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Build the virtual environment from the exact pins in requirements.lock

.PHONY: lock
lock: ## Re-resolve requirements.in into requirements.lock (exact pins)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in
	.lock-venv/bin/pip freeze > requirements.lock && rm -rf .lock-venv

.PHONY: serve
serve: venv ## Create, seed (SIZE=2000) and serve the fixed app on 127.0.0.1:PORT (8000) under gunicorn
	$(VENV)/bin/flask --app fixed.app init-db
	$(VENV)/bin/flask --app fixed.app seed --size $(SIZE)
	@echo "serving the fixed app on http://127.0.0.1:$(PORT)/transactions (Ctrl-C stops it)"
	$(VENV)/bin/gunicorn --bind 127.0.0.1:$(PORT) --workers 2 --threads 4 --graceful-timeout 5 'fixed.app:create_app()'

.PHONY: reproduce
reproduce: venv ## Run every cause and myth, broken and fixed, and print the verdict matrix [DB=sqlite|postgresql|mariadb|all] [CAUSE=...] [JOBS=lanes side by side, 1: in turn]
	$(PY) -m scenarios --db $(DB) $(if $(CAUSE),--cause $(CAUSE)) $(if $(JOBS),--jobs $(JOBS))

.PHONY: $(CAUSES)
$(CAUSES): venv
	$(PY) -m scenarios --db $(DB) --cause $@

.PHONY: readme
readme: venv ## Run the full matrix on all backends and write it into README.md (needs make services)
	$(PY) -m scenarios --db all --readme

.PHONY: doctor
doctor: venv ## Every cause's scenario with the stale-data doctor in broken and fixed alike, then a load on the fixed app with it [DB=...]
	$(PY) -m scenarios --db $(DB) --doctor
	$(PY) -m loadtests --cause uncommitted --app fixed --db $(DB) --doctor --duration 10 --size $(SIZE)

.PHONY: doctor-field
doctor-field: venv ## The doctor on real apps from the registry (field/): each in its own venv; clean flows and injected causes, two tables [DB=... runs each app that supports it there] [ARGS=--readme]
	$(PY) -m field $(if $(filter command line,$(origin DB)),--db $(DB)) $(ARGS)

.PHONY: diff
diff: ## Show the lesson: diff -u fixed/app.py broken/CAUSE.py (make diff CAUSE=...)
	@test -n "$(CAUSE)" -a -f "broken/$(CAUSE).py" || { echo "CAUSE must be one of: $(basename $(notdir $(filter-out broken/__init__.py,$(wildcard broken/*.py))))"; exit 2; }
	@diff -u fixed/app.py broken/$(CAUSE).py || true

.PHONY: isolation
isolation: venv ## Probe what each isolation level shows (second read, phantom, lost update, ORM) [DB=...]
	$(PY) -m scenarios.isolation --db $(DB)

.PHONY: test
test: venv ## Run the test suite on SQLite and on every server that answers (pytest-xdist)
	$(VENV)/bin/pytest -n 2 -q

.PHONY: services
services: ## Start PostgreSQL and its hot standby, MariaDB and its GTID replica (both replicas 1 s behind), and Redis (the task queue's broker) locally; create the lab's login and databases
	scripts/services.sh

.PHONY: clean
clean: ## Stop the servers the lab started, drop the lab's databases, remove local state
	scripts/clean.sh
	rm -rf var results reports .pytest_cache

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-18s %s\n", $$1, $$2}'
	@echo "  one target per cause, each with its full timeline [DB=...]:"
	@for cause in $(CAUSES); do echo "  make $$cause"; done

# ---- loads (loadtests/, issue 4): locust readers and writers, broken and fixed side by side ----
USERS ?= 50
DURATION ?= 20

.PHONY: load
load: venv ## Locust load on broken/CAUSE.py, then the fixed app: stale reads, lost writes, errors side by side CAUSE=... [DB=...] [USERS=50] [DURATION=20]
	@test -n "$(CAUSE)" || { echo "CAUSE is required, e.g. make load CAUSE=uncommitted"; exit 2; }
	$(PY) -m loadtests --cause $(CAUSE) --db $(DB) --users $(USERS) --duration $(DURATION) --size $(SIZE)

BROKEN_CAUSES := $(basename $(notdir $(filter-out broken/__init__.py,$(wildcard broken/*.py))))

.PHONY: load-all
load-all: venv ## make load for every cause with a broken variant, on every backend unless DB= is given, then make load-readme [USERS=50] [DURATION=20]
	@for cause in $(BROKEN_CAUSES); do \
		$(PY) -m loadtests --cause $$cause --db $(if $(filter command line,$(origin DB)),$(DB),all) --users $(USERS) --duration $(DURATION) --size $(SIZE) || echo "load of $$cause: see above"; \
	done
	$(PY) -m loadtests.readme

.PHONY: load-readme
load-readme: venv ## Write the latest stored load of each cause on each backend into README.md and loadtests/README.md ("Which causes a load shows")
	$(PY) -m loadtests.readme

.PHONY: load-distributed
load-distributed: venv ## The same load from a locust master and two workers on 127.0.0.1 CAUSE=... [DB=...] [USERS=50] [DURATION=20]
	@test -n "$(CAUSE)" || { echo "CAUSE is required, e.g. make load-distributed CAUSE=uncommitted"; exit 2; }
	$(PY) -m loadtests --cause $(CAUSE) --db $(DB) --users $(USERS) --duration $(DURATION) --size $(SIZE) --distributed
.PHONY: faults
faults: venv ## The load on the fixed app under gunicorn 2x4 while workers are killed, the database restarts, its connections are ended, the pools and the server slots are taken; the checker's verdict [DB=...] [APP=fixed|CAUSE]
	$(PY) -m loadtests.faults --db $(DB) --app $(or $(APP),fixed)

.PHONY: faults-readme
faults-readme: venv ## The fault schedule on every backend, fixed app then broken/shared_session, written into README.md (needs make services)
	$(PY) -m loadtests.faults --db all --app shared_session
	$(PY) -m loadtests.faults --db all --app fixed --readme
# ---- end of loads ----

# ---- make bench: the transactions page at 1M rows (issue 6); not part of `make test` -----------
# DB defaults to sqlite above for the other targets; the benchmark runs every backend that
# answers unless DB is given (`make bench DB=postgresql`). The data sets stay in lab_bench
# databases (var/bench/ for SQLite) and are reused by the next run; `make clean` drops them.
BENCH_DB = $(if $(filter file,$(origin DB)),all,$(DB))

.PHONY: bench
bench: venv ## Benchmark the fixed page at 1M rows against the database's floor (prints a table, writes results/<db>/bench/), then `make indexes` [DB=sqlite|postgresql|mariadb|all]
	$(PY) -m bench --db $(BENCH_DB)
	$(PY) -m bench.indexes --db $(BENCH_DB)

.PHONY: indexes
indexes: venv ## Measure the plans behind every index at 1M rows and write lab/INDEXES.md from them (lab/INDEXES.measured.json) [DB=...]
	$(PY) -m bench.indexes --db $(BENCH_DB)

.PHONY: bench-doctor
bench-doctor: venv ## What the stale-data doctor costs the fixed app at 2,000 rows: in process, under gunicorn, memory (writes results/<db>/bench-doctor/) [DB=sqlite|postgresql|mariadb]
	$(PY) -m bench.doctor --db $(DB)
# ---- end of bench ----

# ---- notebooks (notebooks/, issue 5): generated from notebooks/texts/*.md, executed on the backends LAB_TEST_* point to ----
.PHONY: notebooks
notebooks: venv ## Regenerate and execute every notebook (commits outputs of a real run)
	$(PY) -m notebooks.build --execute

.PHONY: jupyter
jupyter: venv ## JupyterLab from the lock on 127.0.0.1, the lab's kernel (LAB_TEST_* passed through), opening the overview; prints the URL with its token [JUPYTER_PORT=8888]
	$(PY) -m notebooks.jupyter --port $(or $(JUPYTER_PORT),8888)
# ---- end of notebooks ----

# ---- report (reporting/report.py, issue 5): one self-contained HTML page and its Markdown twin ----
# DB defaults to sqlite above for the other targets; unless DB is given, the report runs the
# missing cells on SQLite and every server that answers (auto), and says in the report which
# server did not answer. It reads the latest results and runs only what has no result yet.
REPORT_DB = $(if $(filter file,$(origin DB)),auto,$(DB))

.PHONY: report
report: venv ## Write reports/report.html (self-contained), reports/report.md and reports/long-operations.ru.md from the latest results, running what is missing [DB=auto|sqlite|postgresql|mariadb|all]
	$(PY) -m reporting.report --run-missing --db $(REPORT_DB)
# ---- end of report ----
