# msrcnn — every target sets up what it needs first (see tools/install_env.sh).
SHELL := /bin/bash
PY := .venv/bin/python
ARGS ?=
export PYTHONPATH := $(CURDIR)/src
export WANDB_SILENT ?= true
export GOMP_SPINCOUNT ?= 200000

.PHONY: install train eval test test-slow test-all lint bench clean help

help:
	@echo "make train [ARGS='hydra overrides']  # the CPU demo (experiment=demo) on embedded synthetic data"
	@echo "make test                             # the default test suite"
	@echo "make test-slow                        # slow end-to-end checks (marker: slow)"
	@echo "make eval ARGS='ckpt_path=...'        # evaluate a checkpoint"
	@echo "make bench                            # speed benchmarks -> benchmarks/results.json"
	@echo "make lint                             # ruff"

install:
	@tools/install_env.sh
	@# The two C kernels (src/msrcnn/ops/_soft_nms_cpu.c, src/msrcnn/evaluation/_rle_cpu.c); about 1 s when up to date.
	@$(PY) tools/build_kernels.py

train: install
	$(PY) src/train.py experiment=demo $(ARGS)

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

clean:
	rm -rf .pytest_cache .ruff_cache outputs multirun build src/msrcnn/*/*.so
