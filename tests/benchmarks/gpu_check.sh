#!/usr/bin/env bash
# One lent-GPU session: versions, the CUDA tests on hardware, the tensor-core kernel against the
# CUDA-core kernels and torch, sweeps. About 6 minutes of GPU time with the default steps.
# Run from the repository root on the GPU machine; everything it keeps goes under $OUT.
#   bash tests/benchmarks/gpu_check.sh [tests] [tune] [sweep] [sweep_heads] [sweep_causal] [sweep_f64]
# (default: tests tune sweep sweep_heads; the last two are there for a longer session)
set -uo pipefail
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
OUT=${OUT:-results/gpu-check}
mkdir -p "$OUT"
steps=${*:-tests tune sweep sweep_heads}
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
    tests)  # the PTX, spill and mma-count tests too: ptxas runs on the GPU machine as well
      timeout 240 python3 -m pytest -q -x -p no:cacheprovider tests/test_numba_cuda.py \
        tests/test_mma_fragments.py tests/test_conformance.py tests/test_peers.py -k "cuda or mma" \
        2>&1 | tee "$OUT/tests.log" | tail -15 || status=1 ;;
    tune)  # every variant checked against float64, then CUDA-event medians; torch alongside
      timeout 210 python3 tests/benchmarks/tune_numba_cuda.py --out "$OUT" --repeats 9 --shapes \
        "${TUNE_SHAPES:-1x1024x64,1x2048x64,1x4096x64,1x8192x64,1x16384x64,1x1024x128,1x2048x128,1x4096x128,1x8192x128,1x16384x128}" \
        2>&1 | grep -v -i warn | tee "$OUT/tune.log" || status=1
      timeout 60 python3 tests/benchmarks/tune_numba_cuda.py --causal --repeats 9 \
        --shapes 1x8192x128 --out "$OUT" 2>&1 | grep -v -i warn | tee -a "$OUT/tune.log" \
        || status=1 ;;
    sweep) sweep sweep --n 1024,2048,4096,8192,16384 --d 32,64,128 ;;
    sweep_heads) sweep sweep_heads --batch 4 --heads 16 --n 1024,2048,4096,8192,16384 --d 128 ;;
    sweep_causal) sweep sweep_causal --n 1024,2048,4096,8192,16384 --d 64 --causal ;;
    sweep_f64) sweep sweep_f64 --n 1024,2048,4096,8192 --d 64 --dtype float64 ;;
  esac
done
exit $status
