# estore-ops: `make demo` runs the pipeline on the embedded default; `make test` runs the tests.
# Both create .venv when it is missing and install the project into it.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TOOLS  := .tools
export DO_NOT_TRACK := 1
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: demo test drill bench tools clean help

help:
	@echo "make demo   - generate sample events, then scan, load, transform, snapshot, report; writes data/report.html (no cloud account)"
	@echo "make test   - install everything (incl. emulators) and run the test suite"
	@echo "make drill  - long reliability drills (crash, concurrency)"
	@echo "make bench  - performance benchmarks, writes bench/results and BENCHMARKS.md"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# Core install: the embedded default only (fast).
$(VENV)/.core-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

# Everything: GCP clients, dbt-bigquery and test tools.
$(VENV)/.all-installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[gcp,dev]'
	touch $@ $(VENV)/.core-installed

# Emulators and checkov, each in its own environment (see tests/tools/install.sh).
$(TOOLS)/.ready: $(wildcard tests/tools/*.sh)
	bash tests/tools/install.sh $(TOOLS)
	touch $@

tools: $(TOOLS)/.ready

demo: $(VENV)/.core-installed
	$(BIN)/estore-ops demo

test: $(VENV)/.all-installed tools
	ESTORE_TOOLS_DIR=$(abspath $(TOOLS)) $(BIN)/python -m pytest -m "not drill" $(PYTEST_ARGS)

drill: $(VENV)/.all-installed tools
	ESTORE_TOOLS_DIR=$(abspath $(TOOLS)) $(BIN)/python -m pytest -m drill -s $(PYTEST_ARGS)

bench: $(VENV)/.all-installed tools
	ESTORE_TOOLS_DIR=$(abspath $(TOOLS)) $(BIN)/python -m bench $(BENCH_ARGS)

clean:
	rm -rf $(VENV) $(TOOLS) data dbt/target dbt/logs
