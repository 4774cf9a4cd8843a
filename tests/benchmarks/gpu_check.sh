#!/usr/bin/env bash
# One lent-GPU session: versions, the CUDA tests on hardware, tile variants against torch, sweeps.
# Run from the repository root on the GPU machine; everything it keeps goes under $OUT.
#   bash tests/benchmarks/gpu_check.sh [tests] [tune] [sweep] [sweep_causal] [sweep_f64]
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu-check}
mkdir -p "$OUT"
steps=${*:-tests tune sweep sweep_causal sweep_f64}
status=0

sweep() {  # name, then `attnbench run` arguments; the run directory comes back as one archive
  local name=$1
  shift
  timeout 240 python3 -m harness run --impl numba_cuda,torch_sdpa_cuda --target 0.3 \
    --out "$OUT/$name" "$@" 2>&1 | grep -v -i warn | tail -40 || status=1
  tar -czf "$OUT/$name.tar.gz" -C "$OUT" "$name" && rm -rf "${OUT:?}/$name"
}

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
        tests/test_conformance.py tests/test_peers.py -k "cuda" 2>&1 | tee "$OUT/tests.log" \
        | tail -15 || status=1 ;;
    tune)
      timeout 150 python3 tests/benchmarks/tune_numba_cuda.py --out "$OUT" \
        --shapes "${TUNE_SHAPES:-1x8192x64,1x16384x64,8x4096x64,1x4096x64,1x8192x32,1x8192x128}" \
        2>&1 | grep -v -i warn | tee "$OUT/tune.log" || status=1
      timeout 60 python3 tests/benchmarks/tune_numba_cuda.py --causal --shapes 1x8192x64 \
        --out "$OUT" 2>&1 | grep -v -i warn | tee -a "$OUT/tune.log" || status=1 ;;
    sweep) sweep sweep --n 1024,2048,4096,8192,16384 --d 32,64,128 ;;
    sweep_causal) sweep sweep_causal --n 1024,2048,4096,8192,16384 --d 64 --causal ;;
    sweep_f64) sweep sweep_f64 --n 1024,2048,4096,8192 --d 64 --dtype float64 ;;
  esac
done
exit $status
