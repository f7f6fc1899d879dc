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

$(VENV)/.installed: requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -r requirements.lock
	touch $@

.PHONY: venv
venv: $(VENV)/.installed ## Build the virtual environment from the exact pins in requirements.lock

.PHONY: lock
lock: ## Re-resolve requirements.in into requirements.lock (exact pins)
	rm -rf .lock-venv && $(PYTHON) -m venv .lock-venv
	.lock-venv/bin/pip install --quiet -r requirements.in
	.lock-venv/bin/pip freeze > requirements.lock && rm -rf .lock-venv

.PHONY: serve
serve: venv ## Create, seed (SIZE=2000) and serve the fixed app on 127.0.0.1:$(PORT) under gunicorn
	$(VENV)/bin/flask --app fixed.app init-db
	$(VENV)/bin/flask --app fixed.app seed --size $(SIZE)
	@echo "serving the fixed app on http://127.0.0.1:$(PORT)/transactions (Ctrl-C stops it)"
	$(VENV)/bin/gunicorn --bind 127.0.0.1:$(PORT) --workers 2 --threads 4 --graceful-timeout 5 'fixed.app:create_app()'

.PHONY: reproduce
reproduce: venv ## Run every cause and myth, broken and fixed, and print the verdict matrix [DB=sqlite|postgresql|mariadb|all] [CAUSE=...]
	$(PY) -m scenarios --db $(DB) $(if $(CAUSE),--cause $(CAUSE))

.PHONY: $(CAUSES)
$(CAUSES): venv
	$(PY) -m scenarios --db $(DB) --cause $@

.PHONY: readme
readme: venv ## Run the full matrix on all backends and write it into README.md (needs make services)
	$(PY) -m scenarios --db all --readme

.PHONY: diff
diff: ## Show the lesson: diff -u fixed/app.py broken/$(CAUSE).py
	@test -n "$(CAUSE)" -a -f "broken/$(CAUSE).py" || { echo "CAUSE must be one of: $(basename $(notdir $(filter-out broken/__init__.py,$(wildcard broken/*.py))))"; exit 2; }
	@diff -u fixed/app.py broken/$(CAUSE).py || true

.PHONY: isolation
isolation: venv ## Probe what each isolation level shows (second read, phantom, lost update, ORM) [DB=...]
	$(PY) -m scenarios.isolation --db $(DB)

.PHONY: test
test: venv ## Run the test suite on SQLite and on every server that answers (pytest-xdist)
	$(VENV)/bin/pytest -n 2 -q

.PHONY: services
services: ## Start PostgreSQL and MariaDB locally and create the lab's login and databases
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
