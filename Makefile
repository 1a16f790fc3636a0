# nlprec: every target that needs the environment depends on `setup`, so on a fresh clone
# `make demo` and `make test` are the only two commands a newcomer needs.
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.setup-stamp
BROWSER_STAMP := $(VENV)/.browser-stamp
PYPROJECTS := pyproject.toml $(wildcard packages/*/pyproject.toml) $(wildcard services/*/pyproject.toml)
PACKAGES := $(sort $(dir $(wildcard packages/*/pyproject.toml services/*/pyproject.toml)))

# Real data lives beside the repository when it is there; otherwise pipelines use their embedded defaults.
SHARED_DATA := $(abspath ../shared/data)
export NLPREC_DATA ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),$(CURDIR)/data)
# Offline by design: nothing downloads weights or data at run time.
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
export MLFLOW_DISABLE_TELEMETRY ?= true
export PYTHONWARNINGS ?= ignore

PIPELINES := $(basename $(notdir $(wildcard pipelines/*.yaml)))
DEMOS := $(filter %-demo,$(PIPELINES))
DEMO_OUT := out/demo
ARGS ?=

.PHONY: help setup browser test lint demo serve bench ui clean $(addprefix pipeline-,$(PIPELINES))

help: ## list targets
	@grep -E '^[a-zA-Z_%-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'
	@echo "pipelines: $(PIPELINES)"

setup: $(STAMP) ## create .venv (Python 3.11), torch==2.13.0 (CPU) first, then every package editable + dev tools

# The stamp is older than any pyproject that changed since, so a second run is a no-op.
$(STAMP): $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0 "setuptools>=68" wheel
	$(BIN)/python -m pip install -q --disable-pip-version-check --no-build-isolation \
	  $(addprefix -e ,$(PACKAGES)) -e ".[dev]"
	@touch $(STAMP)

# The service's page is tested once in headless Chromium (Debian's package). Installed when missing and
# possible (root + apt-get); otherwise that one test skips and says why.
$(BROWSER_STAMP): | $(STAMP)
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "installing Debian's chromium for the browser test"; \
	  timeout 900 sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null' \
	    || echo "chromium could not be installed: the browser test will be skipped"; \
	else echo "no chromium and no root apt-get: the browser test will be skipped"; fi
	@touch $@

browser: $(BROWSER_STAMP) ## headless Chromium for the service's browser test (Debian package)

test: setup browser ## run the whole test suite
	$(BIN)/python -m pytest -q tests $(ARGS)

lint: setup ## ruff
	$(BIN)/ruff check .

demo: setup ## the main job: every *-demo pipeline on its embedded default, then a summary table
	@mkdir -p $(DEMO_OUT); failed=0; \
	for demo in $(DEMOS); do \
	  $(BIN)/nlprec run pipelines/$$demo.yaml --summary $(DEMO_OUT)/$$demo.json $(ARGS) || failed=1; \
	done; \
	$(BIN)/python -m nlprec.core.report $(DEMO_OUT); exit $$failed

pipeline-%: setup ## run pipelines/<name>.yaml (ARGS="--set params.data=DIR ...")
	$(BIN)/nlprec run pipelines/$*.yaml --summary out/$*.json $(ARGS)

serve: setup ## the HTTP service (uvicorn); serves what `make demo` trained unless configured
	$(BIN)/nlprec-serve $(ARGS)

bench: setup ## every benchmark script; each writes its section of benchmarks/RESULTS.md
	@set -e; for script in $(sort $(wildcard benchmarks/*.py)); do \
	  case $$script in *_gpu.py) echo "skip $$script (needs a GPU)"; continue;; esac; \
	  echo "== $$script"; $(BIN)/python $$script $(ARGS); \
	done

ui: setup ## the MLflow UI on the local store
	$(BIN)/nlprec ui

clean: ## remove the step cache and run outputs (keeps .venv and the MLflow store)
	rm -rf .nlprec out
