#!/usr/bin/env bash
# The figures of docs/PERFORMANCE.md's instruction-set tables, for one instruction set:
#   bash tests/benchmarks/isa.sh OUT          the machine's own (native)
#   bash tests/benchmarks/isa.sh OUT avx2     every library held to AVX2
# Numba needs NUMBA_CPU_FEATURES as well as the name: with the name alone it keeps the host's
# features (docs/kernels/numba_parallel.md).
set -euo pipefail
out=$1
# Native takes each library's own choice whatever the environment holds: some VMs set
# OPENBLAS_CORETYPE=Haswell, which holds the GEMM reference to AVX2 on an AVX-512 machine.
if [ "${2:-}" = avx2 ]; then
    export NUMBA_CPU_NAME=haswell NUMBA_CPU_FEATURES="" ATEN_CPU_CAPABILITY=avx2 \
        MKL_ENABLE_INSTRUCTIONS=AVX2 OPENBLAS_CORETYPE=Haswell
else
    unset NUMBA_CPU_NAME NUMBA_CPU_FEATURES ATEN_CPU_CAPABILITY MKL_ENABLE_INSTRUCTIONS \
        OPENBLAS_CORETYPE
fi
run() { python -m harness run --sweep-budget 1800 "$@"; }
run --impl numba_parallel,torch_sdpa --n 256,1024,2048,4096,8192 --d 64,128 \
    --dtype float32,float64 --out "$out/grid"
run --impl numba_parallel --n 4096 --d 64,128 --causal both --out "$out/causal"
run --impl numba_parallel --n 16384 --d 64 --out "$out/memory"
run --impl numpy,numpy_textbook --n 4096 --d 64 --out "$out/numpy"
