#!/usr/bin/env bash
# The model comparison: the baseline, the replication paper's improvements (wide: 1024
# filters in conv 2; hybrid: residual-dropout block) and the sample-level CNNs that
# followed (SampleCNN, ReSE-2; they read 59,049-sample windows and are much slower).
#   experiments/models.sh [HYDRA_OVERRIDES...]      (environment: see experiments/study.sh)
set -euo pipefail
source "$(dirname "$0")/study.sh"
run_study models model_baseline,model_wide,model_hybrid,model_samplecnn,model_rese2 "$@"
