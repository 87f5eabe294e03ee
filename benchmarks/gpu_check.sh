#!/usr/bin/env bash
# GPU check: `tagger bench` on a CUDA GPU in five settings, one table (meant to take under
# 8 minutes on one GPU; not yet timed on one).
#
#   bash benchmarks/gpu_check.sh                          # a machine with a CUDA GPU
#   PYTHON=/path/to/python3 bash benchmarks/gpu_check.sh  # the python that has PyTorch
#   bash benchmarks/gpu_check.sh --device cpu             # anywhere: fewer clips and steps
#
# Each row is one `tagger bench` run of baseline 256/256 on MTAT-sized clips (29.1 s at
# 12 kHz as 10 windows): (a) the model step alone, (b) the framework's training loop and
# (c) the coursework's loop, medians of the rounds (benchmarks/README.md says more):
#   fp32             float32, batch 10
#   bf16+compile     trainer.precision=bf16-mixed compile=true, batch 10
#   on_device        data.on_device=true (the clips held on the GPU), batch 10
#   on_device b64    data.on_device=true data.batch_size=64
#   augment          augment=standard (the augmentation preset), batch 10
# The clips are written once (to --dir, or a temporary folder deleted at the end) and
# every row reads them.
#
# What the machine needs: a python (PYTHON, default python3) with PyTorch (a CUDA build for
# --device cuda), Lightning, torchmetrics, tensorboard, matplotlib, pandas, tqdm, PyYAML and
# numpy, as a cluster node's PyTorch image has. Nothing is downloaded. tagger runs from this
# repository (on PYTHONPATH; nothing is installed), and its other dependencies, where the
# python lacks them, are installed from the wheels in benchmarks/wheels/ (or WHEELS=DIR;
# git ignores the folder) into a temporary folder put on PYTHONPATH. Get the wheels on a
# machine with network access, for the node's Python (here 3.12 on x86-64 Linux), from the
# repository's root:
#
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux2014_x86_64 --platform manylinux_2_17_x86_64 \
#       --platform manylinux_2_28_x86_64 -d benchmarks/wheels \
#       "hydra-core>=1.3.2,<1.4" "omegaconf>=2.3,<2.4" soundfile soxr cffi pycparser
#   pip wheel --no-deps -w benchmarks/wheels antlr4-python3-runtime==4.9.3
#
# (antlr4-python3-runtime 4.9.3, which hydra-core 1.3 needs, is only a source archive on
# PyPI; `pip wheel` builds its pure-Python wheel.) That gives seven wheels, 2.2 MB (the versions of 2026-12):
#   antlr4_python3_runtime-4.9.3-py3-none-any.whl
#   cffi-2.1.1-cp312-cp312-manylinux2014_x86_64.manylinux_2_17_x86_64.whl
#   hydra_core-1.3.8-py3-none-any.whl
#   omegaconf-2.3.1-py3-none-any.whl
#   pycparser-3.12-py3-none-any.whl
#   soundfile-0.14.0-py2.py3-none-manylinux_2_28_x86_64.whl
#   soxr-1.1.0-cp312-abi3-manylinux_2_27_x86_64.manylinux_2_28_x86_64.whl
# Then copy the repository, benchmarks/wheels included, to the node and run this script.
#
# Options: --device cuda|cpu (default cuda); --clips N, --steps N, --warmup N, --rounds N
# (defaults on cuda: 1000 clips, 3 rounds of 100 timed steps after 10; on cpu: 20 clips,
# 1 round of 2 steps after 1); --dir DIR: keep the clips there for the next run. Any other
# argument is a train.py override for every row. Exit status: 0 when every row has its
# figures, 1 when a row failed (its error is printed, the other rows still run), 2 for a
# missing dependency, wheel or GPU.
set -uo pipefail

PYTHON=${PYTHON:-python3}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(dirname "$here")
WHEELS=${WHEELS:-$here/wheels}
device=cuda clips="" steps="" warmup="" rounds="" dir="" overrides=()
fail() { echo "gpu_check: error: $*" >&2; exit 2; }
while (($#)); do
    case $1 in
        --device|--clips|--steps|--warmup|--rounds|--dir)
            (($# >= 2)) || fail "$1 needs a value"
            printf -v "${1#--}" %s "$2"; shift 2 ;;
        -h|--help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) fail "unknown option $1 (see bash $0 --help)" ;;
        *) overrides+=("$1"); shift ;;
    esac
done
case $device in
    cuda) : "${clips:=1000}" "${steps:=100}" "${warmup:=10}" "${rounds:=3}" ;;
    cpu) : "${clips:=20}" "${steps:=2}" "${warmup:=1}" "${rounds:=1}" ;;
    *) fail "--device must be cuda or cpu, not $device" ;;
esac
command -v "$PYTHON" >/dev/null || fail "PYTHON=$PYTHON is not a command; set PYTHON=/path/to/python3"

work=$(mktemp -d "${TMPDIR:-/tmp}/tagger-gpu-check-XXXXXX")
trap 'rm -rf "$work"' EXIT
: "${dir:=$work/clips}"

# 1. tagger's dependencies: the python's own, or installed from the wheels beside this script.
# module:distribution, the python's own (from its PyTorch image) first
deps=(torch:torch lightning:lightning torchmetrics:torchmetrics tensorboard:tensorboard
    matplotlib:matplotlib pandas:pandas tqdm:tqdm yaml:PyYAML numpy:numpy
    hydra:hydra-core omegaconf:omegaconf antlr4:antlr4-python3-runtime soundfile:soundfile
    soxr:soxr cffi:cffi pycparser:pycparser)
lacking=$("$PYTHON" -c '
import importlib.util, sys
print(" ".join(d for m, d in (p.split(":") for p in sys.argv[1:]) if not importlib.util.find_spec(m)))
' "${deps[@]}") || fail "$PYTHON could not run (see above)"
read -ra missing <<<"$lacking"
[[ " $lacking " != *" torch "* ]] \
    || fail "$PYTHON has no torch; set PYTHON=/path/to/python3, the python that has PyTorch"
if ((${#missing[@]})); then
    echo "gpu_check: $PYTHON lacks $lacking; installing from $WHEELS" >&2
    [[ -d $WHEELS ]] \
        || fail "$PYTHON lacks $lacking and there is no folder $WHEELS; download the wheels as the header of $0 says"
    "$PYTHON" -m pip --version >/dev/null 2>&1 \
        || fail "$PYTHON has no pip to install $lacking with; use a python that has pip"
    site=$work/site
    "$PYTHON" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir \
        --disable-pip-version-check --find-links "$WHEELS" --target "$site" "${missing[@]}" \
        || fail "no wheel of $lacking for $PYTHON (Python $("$PYTHON" -c 'import platform; print(platform.python_version())')) in $WHEELS (pip's message above); download them as the header of $0 says"
    export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$repo${PYTHONPATH:+:$PYTHONPATH}
# Every dependency imports, and the device is there: one line on it for the table's title.
"$PYTHON" - "$device" "${deps[@]}" >"$work/title.txt" <<'PY' || exit 2
import importlib, platform, sys

device, pairs = sys.argv[1], sys.argv[2:]
for module in (pair.split(":")[0] for pair in pairs):
    try:
        importlib.import_module(module)
    except Exception as error:
        sys.exit(f"gpu_check: error: {module} does not import: {type(error).__name__}: {error}")
import torch

if device == "cuda" and not torch.cuda.is_available():
    sys.exit(f"gpu_check: error: {sys.executable} sees no CUDA GPU (torch {torch.__version__}); "
             "on a CPU-only machine use --device cpu")
name = torch.cuda.get_device_name() if device == "cuda" else f"CPU ({platform.machine()})"
print(f"{name}; torch {torch.__version__}, Python {platform.python_version()}")
PY

# 2. The rows: label | train.py overrides of that row.
rows=(
    "fp32|"
    "bf16+compile|trainer.precision=bf16-mixed compile=true"
    "on_device|data.on_device=true"
    "on_device b64|data.on_device=true data.batch_size=64"
    "augment|augment=standard"
)
status=0
started=$SECONDS
for i in "${!rows[@]}"; do
    label=${rows[i]%%|*} row_overrides=${rows[i]#*|}
    echo "gpu_check: $((i + 1))/${#rows[@]} $label: tagger bench --device $device $row_overrides" >&2
    row_start=$SECONDS
    # shellcheck disable=SC2086  # the row's overrides are words
    "$PYTHON" -m tagger bench --device "$device" --clips "$clips" --steps "$steps" \
        --warmup "$warmup" --rounds "$rounds" --dir "$dir" --json "$work/row$i.json" \
        $row_overrides "${overrides[@]}" >"$work/row$i.log" 2>&1
    code=$?
    printf '%s\t%s\t%s\t%s\n' "$label" "$row_overrides" "$((SECONDS - row_start))" \
        "$(tail -n 1 "$work/row$i.log")" >>"$work/rows.tsv"
    if ((code != 0)); then
        echo "gpu_check: $label failed (exit $code); the end of its output:" >&2
        tail -n 15 "$work/row$i.log" >&2
        status=1
    fi
done

# 3. One table: each row's medians, or why it has none.
"$PYTHON" - "$work" "$clips" "$steps" "$warmup" "$rounds" "$((SECONDS - started))" <<'PY'
import json, sys
from pathlib import Path

work, clips, steps, warmup, rounds, seconds = sys.argv[1:]
title = (Path(work) / "title.txt").read_text().strip().splitlines()[-1]
print(f"\n{title}; baseline 256/256, {clips} clips; medians of {rounds} round(s) of {steps} "
      f"timed steps after {warmup}; {seconds} s for the rows\n")
print("| setting | overrides | (a) step clips/s | (b) loop clips/s | (c) coursework clips/s "
      "| (b) s/epoch | (b)/(a) | (b)/(c) | (b) peak MiB | wall s |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
for i, line in enumerate((Path(work) / "rows.tsv").read_text().splitlines()):
    label, overrides, wall, last = line.split("\t")
    result = Path(work) / f"row{i}.json"
    if not result.is_file():
        print(f"| {label} | {overrides} | failed: {last.replace('|', '/')} | | | | | | | {wall} |")
        continue
    summary = json.loads(result.read_text())
    a, b, c = summary["ways"]
    ratios = summary["median_ratios"]
    print(f"| {label} | {overrides} | {a['clips_per_s']:.1f} | {b['clips_per_s']:.1f} | "
          f"{c['clips_per_s']:.1f} | {b['epoch_s']:.1f} | {ratios['b/a']:.0%} | "
          f"{ratios['b/c']:.2f}x | {b['peak_mib']:.0f} | {wall} |")
PY
exit "$status"
