# perfops: two commands do everything on a fresh machine with Python >= 3.11:
#   make demo   embedded default (SQLite, no Redis), seeded fleet, live traffic, http://127.0.0.1:8000/
#   make test   lint, types, Django checks, migrations check, OpenAPI check, pytest
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
STAMP := $(VENV)/.installed
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: venv lock demo serve test lint pytest bench clean-demo

# The pinned versions of requirements.lock, then perfops itself (its ranges in pyproject.toml are met by the lock).
$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps -e ".[dev]"
	@touch $(STAMP)

# Re-resolve pyproject.toml's ranges in a scratch venv and pin the result.
lock:
	rm -rf /tmp/perfops-lock && $(PYTHON) -m venv /tmp/perfops-lock
	/tmp/perfops-lock/bin/pip install --quiet --upgrade pip
	/tmp/perfops-lock/bin/pip install --quiet -e ".[dev]"
	( echo "# Exact versions of everything \`make venv\` installs (perfops and its dev tools), tested together."; \
	  echo "# Regenerate after changing pyproject.toml's dependencies: make lock"; \
	  /tmp/perfops-lock/bin/pip freeze --exclude-editable | grep -v '^perfops' ) > requirements.lock

venv: $(STAMP)

demo: venv
	unset DATABASE_URL REDIS_URL; \
	$(PY) manage.py migrate --no-input && \
	$(PY) manage.py seed_demo --if-empty && \
	$(PY) manage.py prepare_demo && \
	$(PY) manage.py collectstatic --no-input --verbosity 0 && \
	echo "perfops demo: open http://$(HOST):$(PORT)/dashboard/performance/  (credentials above; Ctrl-C stops everything)" && \
	PERFOPS_BIND=$(HOST):$(PORT) $(BIN)/honcho -f perfops/deploy/Procfile.demo -d . start

# Production-like: gunicorn + Celery worker + Celery beat against PostgreSQL and Redis.
serve: export DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/perfops
serve: export REDIS_URL ?= redis://127.0.0.1:6379/0
serve: export PERFOPS_HTTPS ?= 0
serve: venv
	$(PY) -m perfops.deploy.ensure_database
	$(PY) manage.py migrate --no-input
	$(PY) manage.py collectstatic --no-input --verbosity 0
	PERFOPS_BIND=$(HOST):$(PORT) $(BIN)/honcho -f perfops/deploy/Procfile -d . start

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy .
	$(PY) manage.py check --fail-level WARNING
	$(PY) manage.py makemigrations --check --dry-run
	$(PY) manage.py spectacular --validate --fail-on-warn --file /dev/null

pytest: venv
	$(BIN)/pytest $(PYTEST_ARGS)

test: lint pytest

bench: venv
	$(PY) bench/run.py $(BENCH_ARGS)

clean-demo:
	rm -rf var/
