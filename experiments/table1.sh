#!/usr/bin/env bash
# Table 1 of Dieleman & Schrauwen (2014) and of the replication paper: five first-layer
# geometries (filter length / stride 1024/1024 ... 256/256), raw audio and spectrogram.
#   experiments/table1.sh [HYDRA_OVERRIDES...]      (environment: see experiments/study.sh)
#   experiments/table1.sh data=coursework data.root=DIR                       # Table I, coursework
#   experiments/table1.sh experiment/setting=dieleman data=store data.path=STORE   # Dieleman
set -euo pipefail
source "$(dirname "$0")/study.sh"
rows=()
for input in raw spectrogram; do
  for geometry in 1024_1024 1024_512 512_512 512_256 256_256; do
    rows+=("table1_${input}_${geometry}")
  done
done
run_study table1 "$(IFS=,; echo "${rows[*]}")" "$@"
