#!/usr/bin/env bash
# The replication paper's optimizer comparison on the baseline at 256/256: SGD (lr 0.1135,
# momentum 0.9), Adam (lr 0.001) and AdamW (lr 0.003, weight decay 0.01).
#   experiments/optimizers.sh [HYDRA_OVERRIDES...]  (environment: see experiments/study.sh)
set -euo pipefail
source "$(dirname "$0")/study.sh"
run_study optimizers optimizer_sgd,optimizer_adam,optimizer_adamw "$@"
