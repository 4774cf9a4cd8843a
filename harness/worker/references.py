"""The reference workloads: matrix products (the compute ceiling) and streaming reads (the memory
one), measured in a worker with the sweep's threads before each round.
"""

from __future__ import annotations

import functools
import time

import numpy as np
from numba import njit, prange

from harness.worker.caches import evict_caches


@functools.lru_cache(maxsize=1)  # 2048² float64: 96 MiB; a sweep runs its dtypes one by one
def _gemm_operands(dtype: str, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((size, size)).astype(dtype)
    b = rng.standard_normal((size, size)).astype(dtype)
    out = np.empty_like(a)
    np.matmul(a, b, out=out)  # warm-up: the first product also starts the BLAS pool
    return a, b, out


def gemm_rates(dtype: str, size: int = 2048, repeats: int = 5) -> list[float]:
    """GFLOP/s of `repeats` size^3 matrix products for `dtype`, one each: attention's ceiling.

    Their median is the peak a sweep divides by (the kernels' figures are medians too). The
    operands are kept, so measuring it again alongside each large shape costs only the
    products themselves.
    """
    a, b, out = _gemm_operands(dtype, size)
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        rates.append(2.0 * size**3 / (time.perf_counter() - start) / 1e9)
    return rates


@functools.lru_cache(maxsize=1)
def _stream_operand(size_bytes: int) -> np.ndarray:
    return np.ones(size_bytes // 8, np.float64)


def stream_rates(size_bytes: int, repeats: int) -> list[float]:
    """GB/s of `repeats` streaming reads (a sum) of size_bytes: the memory-bound reference."""
    data = _stream_operand(size_bytes)
    data.sum()  # warm-up: the pages are touched
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        data.sum()
        rates.append(size_bytes / (time.perf_counter() - start) / 1e9)
    return rates


# A warm read's sample: SAMPLE_BYTES, in at most MAX_READS reads. Below 256 KiB a read costs
# what launching it costs whatever the count (16384 reads of 4 KiB took 0.4 s a sample), so
# the cap changes the time a probe takes, not its rate.
SAMPLE_BYTES = 64 << 20
MAX_READS = 256


def read_rates(size_bytes: int, repeats: int, cold_cache: bool = False) -> list[float]:
    """GB/s of `repeats` streaming reads of size_bytes by every thread of this worker (numba's
    pool, the one the sweep sized): the bandwidth a case moving that many bytes could reach, in
    the same cache state (warm: read again and again; cold_cache: evicted before each read)."""
    data = np.ones(max(size_bytes, 4096) // 4, np.float32)
    _parallel_read(data, 16)  # compiled (or loaded), pages touched
    reads = 1 if cold_cache else max(1, min(MAX_READS, SAMPLE_BYTES // data.nbytes))
    rates = []
    for _ in range(repeats):
        if cold_cache:
            evict_caches()
        start = time.perf_counter()
        for _ in range(reads):
            _parallel_read(data, 16)
        rates.append(reads * data.nbytes / (time.perf_counter() - start) / 1e9)
    return rates


@njit(fastmath=True, cache=True)
def _chunk_sum(x):
    total = np.float32(0)
    for i in range(x.size):
        total += x[i]
    return total


@njit(parallel=True, cache=True)
def _parallel_read(x, chunks):
    """The sum of x, chunk by chunk over numba's threads: a streaming read at full bandwidth."""
    per = -(-x.size // chunks)
    sums = np.zeros(chunks, np.float32)
    for c in prange(chunks):
        sums[c] = _chunk_sum(x[c * per : min(x.size, (c + 1) * per)])
    return sums.sum()
