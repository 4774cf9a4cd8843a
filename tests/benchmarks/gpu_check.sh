#!/usr/bin/env bash
# One lent-GPU session: versions, the CUDA tests on hardware, tile variants against torch, a sweep.
# Run from the repository root on the GPU machine; everything it keeps goes under $OUT.
#   bash tests/benchmarks/gpu_check.sh [tests] [tune] [sweep]   (default: all three)
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu}
mkdir -p "$OUT"
steps=${*:-tests tune sweep}
status=0
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  python3 -c "import sys, numpy, numba, numba_cuda, torch; from numba import cuda; \
print(sys.version.split()[0], 'numpy', numpy.__version__, 'numba', numba.__version__, \
'numba-cuda', numba_cuda.__version__, 'torch', torch.__version__, 'impl', cuda.implementation)"
} 2>&1 | tee "$OUT/env.txt"
for step in $steps; do
  case $step in
    tests)
      timeout 180 python3 -m pytest -q -x -p no:cacheprovider tests/test_numba_cuda.py \
        tests/test_conformance.py tests/test_peers.py -k "cuda" 2>&1 | tee "$OUT/tests.log" | tail -15 || status=1 ;;
    tune)
      timeout 180 python3 tests/benchmarks/tune_numba_cuda.py --out "$OUT" 2>&1 | tee "$OUT/tune.log" || status=1
      timeout 50 python3 tests/benchmarks/tune_numba_cuda.py --causal --shapes 1x8192x64 \
        --out "$OUT" 2>&1 | tee -a "$OUT/tune.log" || status=1 ;;
    sweep)
      timeout ${SWEEP_TIMEOUT:-300} python3 -m harness run --impl numba_cuda,torch_sdpa_cuda \
        --n "${SWEEP_N:-1024,2048,4096,8192,16384}" --d "${SWEEP_D:-32,64,128}" \
        --target "${SWEEP_TARGET:-0.3}" --out "$OUT/sweep" 2>&1 | tail -40 || status=1
      tar -czf "$OUT/sweep.tar.gz" -C "$OUT" sweep && rm -rf "$OUT/sweep" ;;
  esac
done
exit $status
