# faceflow: `make run` runs the whole workflow on the synthetic dataset, `make test` runs the tests.
# Both create .venv (Python 3.10, required by the oneflow==0.9.0 wheels) when it is missing.
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python
STAMP := $(VENV)/.faceflow-installed
CORES ?= 8
# two pytest workers, a test file each; the end-to-end run starts first (tests/conftest.py) and the other
# tests use the cores it leaves idle
TEST_WORKERS ?= 2
export USER ?= $(shell id -un 2>/dev/null || echo faceflow)

.PHONY: run test env clean-results

run: $(STAMP)
	$(VENV)/bin/snakemake --cores $(CORES) all

test: $(STAMP)
	$(VENV)/bin/pytest -ra --durations=15 -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

env: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || { \
	  py310=$$(bash scripts/find-python310.sh) || exit 1; \
	  echo "creating $(VENV) with $$py310"; \
	  "$$py310" -m venv $(VENV); }
	$(PY) -m pip install --quiet --upgrade pip setuptools wheel
	$(PY) -m pip install --quiet -c constraints.txt -e .
	@touch $(STAMP)

clean-results:
	rm -rf results .snakemake
