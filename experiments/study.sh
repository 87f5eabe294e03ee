# Shared by the study scripts (source it, then call run_study): one Hydra sweep over
# experiment configs x seeds into one directory, then `tagger report` on it.
#
# Environment:
#   OUT     the sweep directory (default outputs/studies/NAME/DATE_TIME)
#   SEEDS   comma-separated seeds (default 1,2,3,4,5 on real data, 1,2,3 on the built-in data)
#   QUICK   set to 1 for a smoke run on the built-in data: 1 epoch, 100 short clips, seeds 1,2
#   PYTHON  the interpreter that runs train.py (default python)
# Arguments after the study's own are Hydra overrides for every job, e.g.
#   data=coursework data.root=DIR    or    experiment/setting=dieleman data=store data.path=STORE

#: QUICK=1: 100 built-in clips of 2 windows (each study config keeps its window length), 1 epoch.
QUICK_OVERRIDES=(trainer.max_epochs=1 data.train_clips=100 data.val_clips=50 data.test_clips=50
  data.n_subclips=2)

# run_study NAME EXPERIMENTS [OVERRIDES...]: EXPERIMENTS is a comma-separated list of
# conf/experiment/ config names.
run_study() {
  local name=$1 experiments=$2
  shift 2
  local repo out seeds quick=()
  repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  out=${OUT:-outputs/studies/$name/$(date +%Y-%m-%d_%H-%M-%S)}
  seeds=1,2,3,4,5
  [[ " $* " == *" data="* ]] || seeds=1,2,3
  if [[ -n ${QUICK:-} ]]; then
    quick=("${QUICK_OVERRIDES[@]}")
    seeds=1,2
  fi
  seeds=${SEEDS:-$seeds}
  echo "study $name: experiment=$experiments seed=$seeds -> $out" >&2
  # Jobs are numbered folders; each one's overrides are in its .hydra/overrides.yaml.
  "${PYTHON:-python}" "$repo/train.py" -m "experiment=$experiments" "seed=$seeds" \
    "hydra.sweep.dir=$out" 'hydra.sweep.subdir=${hydra.job.num}' "${quick[@]}" "$@"
  "${PYTHON:-python}" -m tagger report "$out"
}
