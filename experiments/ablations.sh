#!/usr/bin/env bash
# An alias of `python train.py study=ablations [OVERRIDES]` with the project's Python ($PYTHON, else $VENV's or .venv's); see experiments/README.md.
exec "${PYTHON:-${VENV:-$(dirname "$0")/../.venv}/bin/python}" "$(dirname "$0")/../train.py" study=ablations "$@"
