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
PIP := $(BIN)/python -m pip --disable-pip-version-check

# The lock: Linux x86-64, CPython 3.11. torch comes from the PyTorch CPU index, or from a folder of
# wheels that pip's own configuration names (find-links) when that folder holds the pinned build.
LOCKS := requirements/build.txt requirements/torch-cpu.txt requirements/lock.txt
LOCAL_DISTS := nlprec-workspace nlprec-core nlprec-beliefs nlprec-clinical-distill nlprec-clinical-longdoc nlprec-mohawk nlprec-ranking nlprec-sessionrec nlprec-service
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
PIP_FIND_LINKS_DIR := $(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null)
TORCH_SOURCE := $(if $(wildcard $(PIP_FIND_LINKS_DIR)/torch-*+cpu-*.whl),--find-links $(PIP_FIND_LINKS_DIR),--extra-index-url $(TORCH_INDEX) --index-strategy unsafe-best-match)
UV_COMPILE := $(BIN)/uv pip compile -q --generate-hashes --python-version 3.11 --python-platform x86_64-manylinux_2_28 $(TORCH_SOURCE)

# Real data lives beside the repository when it is there; otherwise pipelines use their embedded defaults.
SHARED_DATA := $(abspath ../shared/data)
export NLPREC_DATA ?= $(if $(wildcard $(SHARED_DATA)/README.md),$(SHARED_DATA),$(CURDIR)/data)
# Offline by design: nothing downloads weights or data at run time. NLPREC_ALLOW_DOWNLOAD=1 lifts
# every offline switch together, so hub names download where there is network.
ifeq ($(NLPREC_ALLOW_DOWNLOAD),1)
export HF_HUB_OFFLINE := 0
export TRANSFORMERS_OFFLINE := 0
export HF_DATASETS_OFFLINE := 0
else
export HF_HUB_OFFLINE ?= 1
export TRANSFORMERS_OFFLINE ?= 1
export HF_DATASETS_OFFLINE ?= 1
endif
export MLFLOW_DISABLE_TELEMETRY ?= true
export PYTHONWARNINGS ?= ignore

PIPELINES := $(basename $(notdir $(wildcard pipelines/*.yaml)))
DEMOS := $(filter %-demo,$(PIPELINES))
DEMO_OUT := out/demo
ARGS ?=

.PHONY: help setup lock browser test lint demo serve bench wheelhouse ui clean $(addprefix pipeline-,$(PIPELINES))

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/' | column -t -s $$'\t'
	@echo "pipeline-<name>   run pipelines/<name>.yaml (ARGS=\"--set params.data=DIR ...\")"
	@echo "pipelines: $(PIPELINES)"

setup: $(STAMP) ## create .venv (Python 3.11) and install exactly requirements/*.txt, then every package editable

# Three hash-checked installs, none of which resolves anything: the build tools, torch from the
# PyTorch CPU index (pip also uses a local copy where its configuration names one), then the lock
# from PyPI. Our own packages go in last, editable, without dependencies and without build
# isolation, so every byte that is installed is pinned by requirements/.
$(STAMP): $(LOCKS) $(PYPROJECTS)
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --require-hashes --no-deps -r requirements/build.txt
	$(PIP) install -q --require-hashes --no-deps -r requirements/torch-cpu.txt --index-url $(TORCH_INDEX)
	$(PIP) install -q --require-hashes --no-deps -r requirements/lock.txt
	$(PIP) install -q --no-deps --no-build-isolation $(addprefix -e ,$(PACKAGES)) -e .
	$(BIN)/python -m pip check
	@touch $(STAMP)

lock: ## re-resolve requirements/*.txt from the pyprojects (the only step that takes what is newest)
	@test -x $(BIN)/uv || { echo "make lock needs .venv/bin/uv: run make setup first"; exit 1; }
	$(UV_COMPILE) requirements/lock.in -o requirements/lock.txt $(addprefix --no-emit-package ,$(LOCAL_DISTS))
	$(UV_COMPILE) requirements/build.in -o requirements/build.txt --no-deps -c requirements/lock.txt
	@{ echo "# torch alone, cut from requirements/lock.txt by make lock: the PyTorch CPU index serves it"; \
	   awk '/^[^ #]/{keep = /^torch==/} keep' requirements/lock.txt; } >requirements/torch-cpu.txt

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

# One explicit rule per pipeline: make applies no pattern rule to a phony target.
$(addprefix pipeline-,$(PIPELINES)): pipeline-%: setup ## run pipelines/<name>.yaml (ARGS="--set params.data=DIR ...")
	@mkdir -p out
	$(BIN)/nlprec run pipelines/$*.yaml --summary out/$*.json $(ARGS)

# RANKING_MODEL / SESSIONREC_MODEL: a folder or models:/<name>@<alias> (e.g. models:/ranking-beir@champion).
serve: setup ## the HTTP service (uvicorn); RANKING_MODEL=… SESSIONREC_MODEL=… (default: what `make demo` trained)
	$(BIN)/nlprec-serve $(if $(RANKING_MODEL),--ranking-model $(RANKING_MODEL)) $(if $(SESSIONREC_MODEL),--sessionrec-model $(SESSIONREC_MODEL)) $(ARGS)

# A benchmark states how `make bench` runs it in one line, `# make bench: ARGS` or
# `# make bench: skip REASON`; one without that line runs with no arguments. *_gpu.py need a GPU.
bench: setup ## every CPU benchmark with its default arguments; each writes its section of benchmarks/RESULTS.md
	@set -e; for script in $(sort $(wildcard benchmarks/*.py)); do \
	  case $$script in *_gpu.py) echo "skip $$script: needs a GPU"; continue;; esac; \
	  directive="$$(sed -n 's/^# make bench: *//p' $$script | head -n 1)"; \
	  case "$$directive" in skip*) echo "skip $$script: $${directive#skip }"; continue;; esac; \
	  echo "== $$script $$directive"; $(BIN)/python $$script $$directive $(ARGS); \
	done

wheelhouse: setup ## wheels (from the lock) a GPU node needs for `nlprec run --no-track --export` (docs/records.md)
	$(BIN)/python -m nlprec.core.wheelhouse wheelhouse $(ARGS)

ui: setup ## the MLflow UI on the local store
	$(BIN)/nlprec ui

clean: ## remove the step cache and run outputs (keeps .venv and the MLflow store)
	rm -rf .nlprec out
