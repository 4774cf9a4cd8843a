#!/usr/bin/env bash
# Do ratios reproduce, and does compare tell noise from change? Three pairs of back-to-back
# sweeps of identical code, then a planted 12% slowdown; run from the repository root:
#   bash tests/benchmarks/reproducibility.sh OUT_DIR [more attnbench run options, e.g. --ci 2%]
# `candidate` (tests/benchmarks/planted/) is numba_parallel plus ATTNBENCH_PLANTED_EXTRA of
# its query rows run again in every call. Then, for example:
#   attnbench compare OUT_DIR/pair1a OUT_DIR/pair1b
#   attnbench compare OUT_DIR/pair3b OUT_DIR/planted
set -euo pipefail
out=${1:?usage: reproducibility.sh OUT_DIR}
export ATTNBENCH_IMPLS_PATH="$PWD/tests/benchmarks/planted"
grid=(--impl numpy,candidate --n 512,1024,2048,4096 --d 32,64,128 "${@:2}")
for pair in 1 2 3; do
  for side in a b; do
    ATTNBENCH_PLANTED_EXTRA=0 python -m harness run "${grid[@]}" --out "$out/pair$pair$side"
  done
done
ATTNBENCH_PLANTED_EXTRA=0.12 python -m harness run "${grid[@]}" --out "$out/planted"
