# Two commands for a fresh machine: `make demo` (train a small GLIP on generated data and look at it) and
# `make test` (the test suite CI runs). Both create `.venv` on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint demo transfer self-train benchmark clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip >/dev/null

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -e ".[all]"
	touch $(VENV)/.installed

install: $(VENV)/.installed

# The suite includes transformers' own common test mixins of the installed version (tests/transformers_common),
# fetched once from its source distribution (tools/fetch_transformers_tests.sh).
test: install
	TRANSFORMERS_TESTS_SOURCE="$$(PYTHON=$(BIN)/python bash tools/fetch_transformers_tests.sh)" $(BIN)/python -m pytest -q tests

lint: install
	$(BIN)/ruff check src tests examples benchmarks
	$(BIN)/ruff format --check src tests examples benchmarks

demo: install
	$(BIN)/python examples/pretrain.py --output_dir out/demo

# GLIP self-training in miniature: teacher on a small labelled split -> pseudo labels on caption-only images ->
# student on both; teacher vs student AP50 over 3 seeds (out/self_train/summary.json, pseudo_labels.png).
self-train: install
	$(BIN)/python examples/self_train.py --output_dir out/self_train

# Few-shot transfer of the demo model to never-seen shapes (trains the demo model first when out/demo is missing).
transfer: install
	$(BIN)/python examples/transfer.py --model out/demo --train_demo --output_dir out/transfer

benchmark: install
	$(BIN)/python benchmarks/benchmark_glip_latency.py

clean:
	rm -rf out runs .pytest_cache
