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

# Snakemake 9 front end: its own venv (Python >= 3.11) with the SLURM and cluster-generic executor plugins;
# the jobs still run faceflow from .venv. Put SNAKEMAKE9_VENV on the filesystem the compute nodes share.
SNAKEMAKE9_VENV   ?= $(HOME)/.cache/faceflow/snakemake9
SNAKEMAKE9_PYTHON ?= python3

.PHONY: snakemake9
snakemake9:
	@$(SNAKEMAKE9_PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "make snakemake9: $(SNAKEMAKE9_PYTHON) is Python %d.%d, Snakemake 9 needs >= 3.11 (set SNAKEMAKE9_PYTHON)" % sys.version_info[:2])'
	@test -x $(SNAKEMAKE9_VENV)/bin/python || $(SNAKEMAKE9_PYTHON) -m venv $(SNAKEMAKE9_VENV)
	$(SNAKEMAKE9_VENV)/bin/python -m pip install --quiet -r workflow/envs/snakemake9.txt
	@echo "Snakemake 9 front end: $(SNAKEMAKE9_VENV)/bin/snakemake"
