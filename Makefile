# call-enricher developer commands. `make help` lists them.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

VENV      := .venv
BIN       := $(VENV)/bin
PY        := $(BIN)/python
STAMP     := $(VENV)/.installed
SAM_VENV  := .venv-sam
SAM_STAMP := $(SAM_VENV)/.installed
PIP_FLAGS := --disable-pip-version-check --no-input
PIP_QUIET_UNLESS_TTY := if [ -t 1 ]; then quiet=; else quiet=--quiet; fi
export AWS_DEFAULT_REGION ?= eu-west-1
# Let Python cache compiled modules, and pytest its rewritten test modules: a shell that sets
# PYTHONDONTWRITEBYTECODE would recompile ours in every test run and fresh interpreter.
unexport PYTHONDONTWRITEBYTECODE

.PHONY: help setup check test lint typecheck pytest pytest-fast demo chaos bench bench-quick openapi build clean

include mk/sam.mk

help: ## list the commands
	@grep -hE '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-15s %s\n", $$1, $$2}'

setup: $(STAMP) ## create .venv with Python 3.13 and install the project + dev tools (idempotent)

$(STAMP): pyproject.toml layers/core/requirements.txt requirements-dev.txt scripts/find-python313
	@py313="$$(scripts/find-python313)"; \
	if [ ! -x $(PY) ] || ! $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 13))'; then \
	  echo "creating $(VENV) with $$py313"; rm -rf $(VENV); "$$py313" -m venv $(VENV); \
	fi
	@echo "installing the project, boto3, moto and the dev tools into $(VENV)" \
	  "(first run: about 2 minutes; later runs only when a requirements file changes)..."
	@start=$$SECONDS; $(PIP_QUIET_UNLESS_TTY); \
	$(BIN)/pip install $(PIP_FLAGS) $$quiet -e . -r requirements-dev.txt 2> >(grep -v "is ignored: it is neither" >&2); \
	echo "$(VENV) ready in $$((SECONDS - start)) s. The CLI is $(BIN)/call-enricher;" \
	  "\`source $(BIN)/activate\` puts call-enricher on your PATH."
	@touch $@

check: setup ## the inner loop (under 2 min): lint, types, unit + fast integration tests (no slow ones)
	$(MAKE) --no-print-directory lint typecheck pytest-fast

test: setup sam-setup ## the whole suite, what CI runs: lint, types, every test (slow: e2e, SAM tools)
	$(MAKE) --no-print-directory lint typecheck pytest

lint: setup ## ruff lint + format check; committed schemas, template.yaml's schema registry, openapi.json and geo index up to date
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(PY) -m call_enricher_tools.schemas --check
	$(PY) -m call_enricher_tools.registry --check
	$(PY) -m call_enricher_tools.openapi --check
	$(PY) -m call_enricher_tools.geoindex --check

typecheck: setup ## mypy (strict on the library)
	$(BIN)/mypy layers/core/call_enricher tools/call_enricher_tools

pytest: setup ## run pytest (pass ARGS=... for extra options)
	$(BIN)/pytest $(ARGS)

pytest-fast: setup # pytest without the tests marked slow (ARGS=... for extra options); `make check` runs it
	$(BIN)/pytest -m "not slow" -q $(ARGS)

demo: setup ## run the whole pipeline locally (sandbox, moto, HTTP API, poller), then stop
	$(BIN)/call-enricher demo

chaos: setup ## 10,000 call IDs through the local stack under injected faults (IDS=... to change)
	$(BIN)/call-enricher chaos --ids $(or $(IDS),10000)

bench: setup ## run every benchmark; print the figures and write bench/results/latest.json
	$(PY) -m bench

bench-quick: setup ## the benchmarks with fewer repetitions (a smoke run)
	$(PY) -m bench --quick

openapi: setup ## regenerate openapi.json, events/schemas/ and template.yaml's schema registry from the code
	$(PY) -m call_enricher_tools.openapi
	$(PY) -m call_enricher_tools.schemas
	$(PY) -m call_enricher_tools.registry

build: sam-cli-setup ## sam build for arm64 (no container) + compiled bytecode: what `sam deploy` uploads (no checkov)
	$(MAKE) --no-print-directory sam-build

clean: ## remove venvs, build output and caches
	rm -rf $(VENV) $(SAM_VENV) .aws-sam .mypy_cache .ruff_cache .pytest_cache .hypothesis
