#!/usr/bin/env bash
# Create .venv and install tagger into it, choosing the torch build explicitly.
#
#   scripts/setup.sh           # runtime dependencies
#   scripts/setup.sh --dev     # plus the test tools (pytest, ruff, import-linter, hypothesis,
#                              # scikit-learn, sweep plugins)
#   scripts/setup.sh --sweeps  # plus the Hydra Optuna sweeper and submitit launchers
#
# Which torch build (TORCH_BUILD=auto|cpu|cuda, default auto):
#   cpu   torch==$TORCH_VERSION+cpu, PyTorch's CPU-only build (about 200 MB). It is
#         taken from pip's configured sources if they carry it, otherwise from
#         PyTorch's CPU index ($TORCH_CPU_INDEX).
#   cuda  torch==$TORCH_VERSION from PyPI, the normal CUDA build (several GB).
#   auto  cuda when `nvidia-smi -L` lists a GPU, cpu otherwise.
# torch is installed before tagger; tagger's own requirement (torch>=2.3) is then
# already met, so pip never swaps the CPU build for a CUDA one.
#
# Other knobs: VENV (default .venv), PYTHON (interpreter to create it, default python3).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}
TORCH_BUILD=${TORCH_BUILD:-auto}
TORCH_CPU_INDEX=${TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
extras=""
for arg in "$@"; do
    case "$arg" in
        --dev|--sweeps) extras="${extras:+$extras,}${arg#--}" ;;
        *) echo "setup: unknown option '$arg' (use --dev and/or --sweeps)" >&2; exit 2 ;;
    esac
done
[[ -n "$extras" ]] && extras="[$extras]"

if [[ "$TORCH_BUILD" == auto ]]; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L 2>/dev/null | grep -q GPU; then
        TORCH_BUILD=cuda
    else
        TORCH_BUILD=cpu
    fi
fi

if [[ ! -x "$VENV/bin/python" ]]; then
    "$PYTHON" -m venv "$VENV"
    # The pip a distribution's venv brings may predate PEP 517 builds by default (Debian's
    # 23.0 installs sdists such as antlr4-python3-runtime with `setup.py install`, leaving
    # no wheel metadata behind); a current pip builds a wheel for every package.
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
fi
pip=("$VENV/bin/python" -m pip install --quiet --disable-pip-version-check)

installed=$("$VENV/bin/python" -c 'import torch; print(torch.__version__)' 2>/dev/null || true)
case "$TORCH_BUILD" in
    cpu)
        if [[ "$installed" != "$TORCH_VERSION+cpu" ]]; then
            echo "setup: installing torch $TORCH_VERSION, CPU build (no NVIDIA GPU found; TORCH_BUILD=cuda to override)"
            "${pip[@]}" "torch==$TORCH_VERSION+cpu" 2>/dev/null \
                || "${pip[@]}" "torch==$TORCH_VERSION+cpu" --extra-index-url "$TORCH_CPU_INDEX"
        fi ;;
    cuda)
        if [[ "$installed" != "$TORCH_VERSION" ]]; then
            echo "setup: installing torch $TORCH_VERSION, CUDA build from PyPI"
            "${pip[@]}" "torch==$TORCH_VERSION"
        fi ;;
    *) echo "setup: TORCH_BUILD must be auto, cpu or cuda, not '$TORCH_BUILD'" >&2; exit 2 ;;
esac

echo "setup: installing tagger$extras into $VENV"
"${pip[@]}" -e ".$extras"
