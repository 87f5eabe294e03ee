# The two quickstart commands (see README.md). Both install what they need into $(VENV)
# (default .venv; `VENV=/path/to/env make train` uses another environment).
VENV ?= .venv
export VENV
PY := $(VENV)/bin/python

.PHONY: train test lint
train:  ## install, then train the baseline on the built-in synthetic data
	bash scripts/setup.sh
	$(PY) train.py

test:  ## install with the test tools, then run lint and the whole test suite
	bash scripts/setup.sh --dev
	$(PY) -m ruff check .
	$(PY) -m pytest

lint:
	$(PY) -m ruff check .
