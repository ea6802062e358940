#!/usr/bin/env bash
# Issue 27's GPU check, one short script: one standard case of the grid (LIDC chest CT, Gaussian 0.1, seed 0:
# the quick preset's timing volume) and the full preset's stages timed and estimated for its whole budget, which
# no GPU lease of minutes can run whole.
#
#   bash benchmarks/gpu_check.sh WORK_DIR [STANDARD_SECONDS] [FULL_SECONDS]
#
# WORK_DIR gets issue27_gpu/ (the grid-standard suite's files) and preset_cost/ (benchmarks.cost's);
# each part stops at its time limit (default: none); $PYTHON (default python3) runs them. The case's peers are read from
# WORK_DIR/issue27_gpu/peer_cases when copied there (they do not depend on the device; else BM3D and BM4D run on
# the CPU, minutes).
set -uo pipefail
work=${1:?usage: bash benchmarks/gpu_check.sh WORK_DIR [STANDARD_SECONDS] [FULL_SECONDS]}
limit() { if [ "${1:-0}" -gt 0 ]; then echo "timeout $1"; fi; }
status=0
$(limit "${2:-0}") "${PYTHON:-python3}" -m benchmarks run --suite grid-standard --data lidc --noise gaussian \
  --seeds 0 --no-ablations --resume --out "$work/issue27_gpu" || status=$?
$(limit "${3:-0}") "${PYTHON:-python3}" -m benchmarks.cost preset --preset full --slices 24 --size 256 --steps 100 \
  --out "$work/preset_cost" || status=$?
exit $status
