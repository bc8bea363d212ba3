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
.PHONY: help sync sync-check sync-backup upgrade downgrade current history heads check plan preflight audit ci fleet-status fleet-upgrade revision test test-fast lint format venv check-env

yes_flag = $(if $(YES),--yes,)

help: ## show this help
	@echo "Usage: make TARGET [ENV=local|dev|staging|prod] [REV=...] [MSG=...] [YES=1]"
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'
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

heads: $(VENV)/.runtime check-env ## show the head revision(s), ENV's current one marked
	$(INVOKE) $(ENV).heads

check: $(VENV)/.runtime check-env ## compare the models with ENV's database (read-only)
	$(INVOKE) $(ENV).check

plan: $(VENV)/.runtime check-env ## what upgrading ENV to REV (default head) would run, linted
	$(INVOKE) $(ENV).plan $(if $(REV),--rev=$(REV),)

preflight: $(VENV)/.runtime check-env ## deploy gate for ENV (exit codes 10-13 through invoke)
	$(INVOKE) $(ENV).preflight $(if $(REV),--rev=$(REV),)

audit: $(VENV)/.runtime check-env ## who changed ENV's database, newest first
	$(INVOKE) $(ENV).audit

ci: $(VENV)/.runtime ## the migration checks a pipeline runs (exit codes 20-24 through invoke)
	$(INVOKE) ci.check

FLEET ?=
fleet-status: $(VENV)/.runtime ## every fleet target's revision (FLEET=name when several)
	$(INVOKE) fleet.status $(if $(FLEET),--fleet=$(FLEET),)

fleet-upgrade: $(VENV)/.runtime ## upgrade every fleet target to REV (default head)
	$(INVOKE) fleet.upgrade $(if $(FLEET),--fleet=$(FLEET),) $(if $(REV),--rev=$(REV),) $(yes_flag)

# MSG is data (MSG="$$PR_TITLE" is a real use): taken unexpanded with $(value), never exported
# as a make variable (exporting expands it: $(shell ...) would run), and handed to the shell
# through an environment variable, never pasted into the recipe's text.
unexport MSG
revision: export REVISION_MESSAGE := $(value MSG)
revision: $(VENV)/.runtime ## autogenerate a revision from the models and the history: make revision MSG="add x"
	@test -n "$$REVISION_MESSAGE" || { echo 'revision needs MSG="what it changes"' >&2; exit 2; }
	@case "$(ENV)" in local|dev) ;; *) echo "revision runs on ENV=local or ENV=dev (got '$(ENV)')" >&2; exit 2;; esac
	$(INVOKE) $(ENV).revision --autogenerate --message "$$REVISION_MESSAGE"

# Each test makes its own throwaway databases, so the suite runs on parallel workers.
# The suite starts Python hundreds of times: with PYTHONDONTWRITEBYTECODE set (some machines set
# it), each start compiled the project's modules again, 0.2 s of CPU each time. Bytecode goes to
# the git-ignored __pycache__ folders.
WORKERS ?= 3
PYTEST := PYTHONDONTWRITEBYTECODE= $(VENV)/bin/python -m pytest -n $(WORKERS) --dist loadgroup
test: $(VENV)/.dev ## run the whole test suite on WORKERS parallel workers (needs the local servers)
	$(PYTEST)

test-fast: $(VENV)/.dev ## the suite without the slow end-to-end tests (marked slow)
	$(PYTEST) -m "not slow"

lint: $(VENV)/.dev ## ruff lint and format check, layer contracts (import-linter), types (mypy)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-cache
	$(VENV)/bin/mypy

format: $(VENV)/.dev ## ruff format and autofix
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .
