# Every target creates (or reuses) the virtualenv in .venv and installs what it needs.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)
PYTEST_ARGS ?=

.PHONY: install serve migrate lint pytest test mutation clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	# checkov (tests/test_deploy.py checks the manifests and the Dockerfile with it) pins
	# packaging<24, which pytest cannot use: it gets a virtualenv of its own, linked into ours
	test -x $(VENV)/checkov/bin/checkov || $(PYTHON) -m venv $(VENV)/checkov
	$(VENV)/checkov/bin/python -m pip install --quiet 'checkov>=3.2'
	ln -sf ../checkov/bin/checkov $(BIN)/checkov
	rm -f $(VENV)/.installed-*
	touch $(STAMP)

install: $(STAMP)

## Run the bot (opsgate serve) on the database of OPSGATE_DATABASE_URL (default: ./opsgate.db).
serve: $(STAMP)
	$(BIN)/opsgate serve $(if $(HOST),--host $(HOST)) $(if $(PORT),--port $(PORT))

migrate: $(STAMP)
	$(BIN)/opsgate migrate

## ruff (lint and format), mypy (strict on bot/, approvals/, actions/), import-linter.
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

## The test suite; on PostgreSQL when OPSGATE_TEST_DATABASE_URL is set, else on SQLite.
pytest: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

## The whole test command: lint, then the suite.
test: lint pytest

## Mutation testing (mutmut) of the policy decision, the lifecycle and the gate's approval path:
## prints each module's kill rate and every surviving mutant; fails under 95 % (mutation/run.py).
mutation: $(STAMP)
	$(BIN)/python mutation/run.py

clean:
	rm -rf mutants $(VENV) .pytest_cache .mypy_cache .ruff_cache *.egg-info
