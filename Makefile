# msrcnn — every target sets up what it needs first (`make install`: uv sync from uv.lock).
SHELL := /bin/bash
PY := .venv/bin/python
ARGS ?=
PYTHON ?= python3
# uv from PATH, else the one `make install` puts in $(PYTHON)'s packages with pip.
UV := $(shell command -v uv 2>/dev/null || echo "$(PYTHON) -m uv")
export WANDB_SILENT ?= true
export GOMP_SPINCOUNT ?= 200000

.PHONY: install train smoke eval test test-slow test-all lint bench notebook clean help

help:
	@echo "make install                          # .venv from uv.lock (uv sync --frozen), msrcnn editable; every target runs it"
	@echo "make train [ARGS='hydra overrides']  # the CPU demo (experiment=demo) on embedded synthetic data"
	@echo "make smoke                            # a complete train + evaluate on 8 tiny images (experiment=smoke, < 1 min)"
	@echo "make test                             # the default test suite"
	@echo "make test-slow                        # slow end-to-end checks (marker: slow)"
	@echo "make eval ARGS='ckpt_path=...'        # evaluate a checkpoint"
	@echo "make bench                            # speed benchmarks -> benchmarks/results.json"
	@echo "make lint                             # ruff"
	@echo "make notebook                         # JupyterLab on notebooks/analysis.ipynb (the notebook extra)"

# ./.venv with exactly the versions of uv.lock (the dev group included) and msrcnn installed
# editable; seconds when up to date or when uv's cache already holds the wheels (hard links).
# --inexact: packages a user added on top are kept. The cluster extra (the SLURM launcher) is part of
# the project environment, so its configs are tested too; so is the export extra (ONNX, ONNX Runtime),
# which the export test runs.
install:
	@command -v uv >/dev/null 2>&1 || $(PYTHON) -m uv --version >/dev/null 2>&1 || \
		{ echo "msrcnn: installing uv with pip ($(PYTHON) -m pip install uv)"; $(PYTHON) -m pip install --quiet uv; }
	@if [ -L .venv ]; then echo "msrcnn: replacing the .venv link (a shared environment) by a project environment"; rm .venv; fi
	@[ -x $(PY) ] || echo "msrcnn: setting up .venv from uv.lock (uv sync; under a minute with a warm uv cache)"
	@$(UV) sync --quiet --frozen --inexact --extra cluster --extra export

train: install
	$(PY) src/train.py experiment=demo $(ARGS)

smoke: install
	$(PY) src/train.py experiment=smoke $(ARGS)

eval: install
	$(PY) src/eval.py $(ARGS)

test: install
	$(PY) -m pytest -q $(ARGS)

test-slow: install  # exit status 5 = no test selected, fine while no slow test exists
	$(PY) -m pytest -q -m slow $(ARGS) || [ $$? -eq 5 ]

test-all: install
	$(PY) -m pytest -q -m "slow or not slow" $(ARGS)

lint: install
	$(PY) -m ruff check src tests experiments benchmarks
	$(PY) -m ruff format --check src tests experiments benchmarks

bench: install
	$(PY) benchmarks/run.py $(ARGS)

notebook: install
	$(UV) run --extra cluster --extra export --extra notebook jupyter lab notebooks/analysis.ipynb

clean:
	rm -rf .pytest_cache .ruff_cache outputs multirun build
