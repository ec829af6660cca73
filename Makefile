# Everything runs from the project's own virtualenv; `make setup` builds it from pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup refresh demo test test-fast lint bench clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# compat: a plain path entry instead of an import hook (saves ~30 ms at every start)
	$(BIN)/python -m pip install --quiet -e '.[dev,sample]' --config-settings editable_mode=compat
	touch $(STAMP)

# A real refresh: settings from ./etl.toml when present (see etl.toml.example), then the
# environment (ETL_DB_URL, MAXMIND_DIR, GREYNOISE_API_KEY, ETL_CONFIG), then ARGS.
refresh: setup
	mkdir -p data
	$(BIN)/python -m etl.refresh $(if $(wildcard etl.toml),--config etl.toml) $(ARGS)

# Sample world under data/demo/ (never data/honeypot.sqlite; it rebuilds only its own earlier
# world there), both simulators on loopback, a full refresh (ARGS="--ips 50000").
demo: setup
	$(BIN)/python -m testbed.demo $(ARGS)

lint: setup
	$(BIN)/ruff check etl testbed tests bench
	$(BIN)/ruff format --check etl testbed tests bench
	$(BIN)/mypy

# Four workers on two cores: most tests wait on a server, a child process or a lock, not on a
# core (pytest-xdist; TEST_WORKERS=0 runs them one after the other).
TEST_WORKERS ?= 4

test: lint
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal --cov=etl --cov-report=term \
		--cov-fail-under=85 --durations=10

# The tests that need neither PostgreSQL nor a child process (markers set in tests/conftest.py);
# no coverage gate.
test-fast: setup
	$(BIN)/pytest -n $(TEST_WORKERS) --dist worksteal -m "not postgres and not subprocess" -q

# SPEC 7: every benchmark and its ratio against the target (about 30 minutes; PostgreSQL on
# 127.0.0.1:5432); the tables also go to bench/results.md.
bench: setup
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .coverage
