"""Cold caches on request: the CPU caches evicted before a timed call or a read."""

from __future__ import annotations

import contextlib
import functools
from pathlib import Path

import numpy as np
from numba import njit, prange

EVICT_MIN_BYTES = 128 << 20  # what is written when the cache size is unknown, or small


def last_level_cache_bytes() -> int | None:
    """The largest CPU cache Linux reports (sysfs), or None. (py-cpuinfo, which machine.py
    uses for the CPU's name, reported a 1 MiB L3 on the Zen 4 VM where sysfs says 32 MiB.)"""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        with contextlib.suppress(OSError, ValueError):
            text = path.read_text().strip().upper()
            unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
            sizes.append(int(text.rstrip("KMG")) * unit)
    return max(sizes, default=None)


@functools.lru_cache(maxsize=1)
def _eviction_buffer() -> np.ndarray:
    llc = last_level_cache_bytes() or 0
    return np.empty(max(EVICT_MIN_BYTES, 4 * llc) // 4, np.float32)


def evict_caches() -> None:
    """Write a buffer four times the last-level cache from every thread (as triton's do_bench
    writes one to the L2 of a GPU), so that the next call finds its inputs in DRAM."""
    _parallel_fill(_eviction_buffer(), 16)


@njit(parallel=True, cache=True)
def _parallel_fill(x, chunks):
    per = -(-x.size // chunks)
    for c in prange(chunks):
        x[c * per : min(x.size, (c + 1) * per)] = np.float32(c)
