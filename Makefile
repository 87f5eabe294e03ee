# The quickstart commands (see README.md); `make test-all` is what CI runs (.ci/run); the tests
# run in one pytest-xdist worker per core, each computing with one thread (tests/conftest.py). Each
# installs what it needs into $(VENV) (default .venv; `VENV=/path/to/env make train` uses
# another environment).
VENV ?= .venv
export VENV
PY := $(VENV)/bin/python

.PHONY: train test test-all lint
train:  ## install, then train the baseline on the built-in synthetic data
	bash scripts/setup.sh
	$(PY) train.py

test:  ## install with the test tools, then lint and the tests not marked slow (minutes)
	bash scripts/setup.sh --dev
	$(PY) -m ruff check .
	$(PY) -m pytest -n auto -m "not slow"

test-all:  ## install with the test tools, then lint and every test, slow ones included (CI)
	bash scripts/setup.sh --dev
	$(PY) -m ruff check .
	$(PY) -m pytest -n auto

lint:
	$(PY) -m ruff check .
