#!/usr/bin/env bash
# Dieleman & Schrauwen's (2014) Tables 2 and 3 on the raw-audio model at 1024/1024: the
# first layer's nonlinearity (ReLU, log(1 + C·x²), log(1 + C·|x|)) and pooling across its
# filters (none, L2 or max over groups of 2 or 4).
#   experiments/ablations.sh [HYDRA_OVERRIDES...]   (environment: see experiments/study.sh)
set -euo pipefail
source "$(dirname "$0")/study.sh"
run_study ablations nonlinearity_relu,nonlinearity_log1p_sq,nonlinearity_log1p_abs,\
pooling_l2_2,pooling_l2_4,pooling_max_2,pooling_max_4 "$@"
