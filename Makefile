# Everything runs from a local virtual environment made on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned through the constraint file so no install pulls CUDA wheels.
PIP_INSTALL := $(BIN)/python -m pip install --quiet --disable-pip-version-check -c constraints.txt
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: install test demo lint bench mutate mutate-again mutate-again-full known-bugs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/python
	$(PIP_INSTALL) --upgrade pip
	$(PIP_INSTALL) torch==2.13.0
	$(PIP_INSTALL) -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/python -m pytest -n 2 -q tests

demo: install
	$(BIN)/sparkle-video demo --out demo_output

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/decode.py
	$(BIN)/python benchmarks/bench_eval.py
	$(BIN)/python benchmarks/edit_pipeline.py
	$(BIN)/python benchmarks/hub.py
	$(BIN)/python benchmarks/generate.py
	$(BIN)/python benchmarks/train.py

# Mutation testing of the critical modules ([tool.mutmut] in pyproject.toml); not part of CI (slow).
# `make mutate ONLY="sparkle_video.data.masks*"` limits the run to matching mutants.
mutate: install
	$(BIN)/mutmut run $(ONLY) || true
	$(BIN)/python scripts/mutation_report.py --survivors

known-bugs: install
	$(BIN)/python scripts/check_known_bugs.py

# mutmut keeps every verdict it has reached, so after adding tests re-test the last run's survivors:
# `mutate-again` against each module's own unit tests (minutes), `mutate-again-full` through mutmut
# (every test that calls the mutated function: hours where every test reaches it).
mutate-again: install
	$(BIN)/python scripts/mutation_retest.py $(MODULES)
	$(BIN)/python scripts/mutation_report.py --survivors

mutate-again-full: install
	$(BIN)/mutmut run $$($(BIN)/python scripts/mutation_report.py --names) || true
	$(BIN)/python scripts/mutation_report.py --survivors

clean:
	rm -rf $(VENV) demo_output .pytest_cache .ruff_cache mutants
