#!/usr/bin/env bash
# Augmentation on and off: augment=none vs augment=standard (conf/augment/), on the
# baseline at 256/256 in the coursework setting; any other setting with overrides, e.g.
# optimizer=adamw trainer.max_epochs=20.
#   experiments/augment.sh [HYDRA_OVERRIDES...]  (environment: see experiments/study.sh)
set -euo pipefail
source "$(dirname "$0")/study.sh"
run_study augment augment_none,augment_standard "$@"
