# Shared by the study scripts (source it, then call run_study): one Hydra sweep over
# experiment configs x seeds into one directory, then `tagger report` on it.
#
# Environment:
#   OUT     the sweep directory (default outputs/studies/NAME/DATE_TIME)
#   SEEDS   comma-separated seeds (default 1,2,3,4,5 on real data, 1,2,3 on the built-in data)
#   QUICK   set to 1 for a smoke run on the built-in data: 1 epoch, 100 short clips, seeds 1,2
#   PYTHON  the interpreter that runs train.py and `tagger report`. Default: the first of
#           $VENV/bin/python (the environment scripts/setup.sh made), the repository's
#           .venv/bin/python, the active virtual environment's, python3 and python that
#           has tagger's packages (torch, lightning, hydra, pandas).
# Arguments after the study's own are Hydra overrides for every job, e.g.
#   data=coursework data.root=DIR    or    experiment/setting=dieleman data=store data.path=STORE

#: QUICK=1: 100 built-in clips of 2 windows (each study config keeps its window length), 1 epoch.
QUICK_OVERRIDES=(trainer.max_epochs=1 data.train_clips=100 data.val_clips=50 data.test_clips=50
  data.n_subclips=2)

# study_python REPO: print the interpreter to run the study with, or fail with one line.
study_python() {
  local repo=$1 venv=${VENV:-} candidate
  if [[ -n ${PYTHON:-} ]]; then
    echo "$PYTHON"
    return
  fi
  [[ -z $venv || $venv == /* ]] || venv=$repo/$venv
  for candidate in ${venv:+"$venv/bin/python"} "$repo/.venv/bin/python" \
      ${VIRTUAL_ENV:+"$VIRTUAL_ENV/bin/python"} python3 python; do
    command -v "$candidate" >/dev/null 2>&1 || continue
    if "$candidate" -c 'import importlib.util as u, sys
sys.exit(any(u.find_spec(m) is None for m in ("torch", "lightning", "hydra", "pandas")))' \
        2>/dev/null; then
      echo "$candidate"
      return
    fi
  done
  echo "study: no Python with tagger's packages found (tried $repo/.venv/bin/python," \
    "\$VIRTUAL_ENV, python3, python); run 'make train' to create .venv, or set" \
    "PYTHON=/path/to/env/bin/python" >&2
  return 1
}

# run_study NAME EXPERIMENTS [OVERRIDES...]: EXPERIMENTS is a comma-separated list of
# conf/experiment/ config names.
run_study() {
  local name=$1 experiments=$2
  shift 2
  local repo out seeds python quick=()
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  python=$(study_python "$repo") || exit 2
  out=${OUT:-outputs/studies/$name/$(date +%Y-%m-%d_%H-%M-%S)}
  seeds=1,2,3,4,5
  [[ " $* " == *" data="* ]] || seeds=1,2,3
  if [[ -n ${QUICK:-} ]]; then
    quick=("${QUICK_OVERRIDES[@]}")
    seeds=1,2
  fi
  seeds=${SEEDS:-$seeds}
  echo "study $name: experiment=$experiments seed=$seeds -> $out ($python)" >&2
  # This repository's tagger, for train.py and the report alike.
  export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
  # Jobs are numbered folders; each one's overrides are in its .hydra/overrides.yaml.
  "$python" "$repo/train.py" -m "experiment=$experiments" "seed=$seeds" \
    "hydra.sweep.dir=$out" 'hydra.sweep.subdir=${hydra.job.num}' "${quick[@]}" "$@"
  "$python" -m tagger report "$out"
}
