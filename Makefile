# Aliases for the invoke tasks. Each target creates .venv from the requirements when missing.
# `make` alone prints this help.

PYTHON ?= python3
VENV   ?= .venv
INVOKE := $(VENV)/bin/invoke
ENVS   := local dev staging prod
ENV    ?= dev
# The environments' long names work too: ENV=production means prod, development dev.
override ENV := $(patsubst production,prod,$(patsubst development,dev,$(strip $(ENV))))
REV    ?=
MSG    ?=
YES    ?=

.DEFAULT_GOAL := help
.PHONY: help sync sync-check sync-backup upgrade downgrade current history heads check revision test test-fast lint format venv check-env

yes_flag = $(if $(YES),--yes,)

help: ## show this help
	@echo "Usage: make TARGET [ENV=local|dev|staging|prod] [REV=...] [MSG=...] [YES=1]"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'
	@echo "Exit codes: make ends every failure with 2. Where the task's own code matters"
	@echo "(4/5 sync-check, 6 lock, 10-13 preflight, 20-24 ci.check) run the invoke command"
	@echo "that the target prints, e.g. .venv/bin/invoke local.sync --check; echo \$$?"

$(VENV)/.runtime: requirements.txt
	@test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
	@touch $@

$(VENV)/.dev: requirements-dev.txt requirements.txt $(VENV)/.runtime
	$(VENV)/bin/python -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.runtime ## create .venv with the runtime requirements

check-env:
	@case " $(ENVS) " in *" $(ENV) "*) ;; *) echo "ENV must be one of: $(ENVS), or development, production (got '$(ENV)')" >&2; exit 2;; esac

sync: $(VENV)/.runtime ## bring the local database up to the models (SQLite by default)
	$(INVOKE) local.sync

sync-check: $(VENV)/.runtime ## report differences between models and the local database
	$(INVOKE) local.sync --check

sync-backup: $(VENV)/.runtime ## back the local database up, then sync
	$(INVOKE) local.sync --backup

upgrade: $(VENV)/.runtime check-env ## upgrade ENV to REV (default head)
	$(INVOKE) $(ENV).upgrade $(if $(REV),--rev=$(REV),) $(yes_flag)

downgrade: $(VENV)/.runtime check-env ## downgrade ENV to REV (required: -1, base or an id)
	@test -n "$(REV)" || { echo "downgrade needs REV=-1, REV=base or REV=<revision id>" >&2; exit 2; }
	$(INVOKE) $(ENV).downgrade --rev=$(REV) $(yes_flag)

current: $(VENV)/.runtime check-env ## show ENV's revision
	$(INVOKE) $(ENV).current

history: $(VENV)/.runtime check-env ## show the revision history with ENV's revision marked
	$(INVOKE) $(ENV).history

heads: $(VENV)/.runtime ## show the head revision(s)
	$(INVOKE) dev.heads

check: $(VENV)/.runtime check-env ## compare the models with ENV's database (read-only)
	$(INVOKE) $(ENV).check

# MSG is data (MSG="$$PR_TITLE" is a real use): taken unexpanded with $(value), never exported
# as a make variable (exporting expands it: $(shell ...) would run), and handed to the shell
# through an environment variable, never pasted into the recipe's text.
unexport MSG
revision: export REVISION_MESSAGE := $(value MSG)
revision: $(VENV)/.runtime ## autogenerate a revision against dev: make revision MSG="add x"
	@test -n "$$REVISION_MESSAGE" || { echo 'revision needs MSG="what it changes"' >&2; exit 2; }
	$(INVOKE) dev.revision --autogenerate --message "$$REVISION_MESSAGE"

# Each test makes its own throwaway databases, so the suite runs on parallel workers.
WORKERS ?= 3
test: $(VENV)/.dev ## run the whole test suite on WORKERS parallel workers (needs the local servers)
	$(VENV)/bin/python -m pytest -n $(WORKERS)

test-fast: $(VENV)/.dev ## the suite without the slow end-to-end tests (marked slow)
	$(VENV)/bin/python -m pytest -n $(WORKERS) -m "not slow"

lint: $(VENV)/.dev ## ruff lint and format check, layer contracts (import-linter), types (mypy)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

format: $(VENV)/.dev ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
