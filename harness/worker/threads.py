"""One thread count for every pool in a worker (numba, BLAS, torch); a quiet CPU before timing."""

from __future__ import annotations

import sys
import time

_THREADS: int | None = None


def thread_environment(threads: int) -> dict[str, str]:
    """The sizes of the thread pools that read them when they are created. (numba's is set at
    run time: its NUMBA_NUM_THREADS is the most it may ever use, read once by the server.)"""
    value = str(threads)
    return {"OMP_NUM_THREADS": value, "OPENBLAS_NUM_THREADS": value, "MKL_NUM_THREADS": value}


def set_threads(threads: int) -> dict:
    """The same thread count for numba, the BLAS pools and (when loaded) torch; what was set."""
    global _THREADS
    _THREADS = threads
    import numba
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    numba.set_num_threads(threads)
    threads_after_import()
    return {"numba": numba.get_num_threads(), "blas": threads}


def threads_after_import() -> None:
    """torch is imported by its implementation's prepare; give it the same count then."""
    torch = sys.modules.get("torch")
    if torch is not None and _THREADS is not None and torch.get_num_threads() != _THREADS:
        torch.set_num_threads(_THREADS)


def threading_report() -> dict:
    import numba
    from threadpoolctl import threadpool_info

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not started"
    report = {
        "numba_threads": numba.get_num_threads(),
        "numba_threading_layer": layer,
        "blas": [
            {"api": p.get("internal_api"), "threads": p.get("num_threads")}
            for p in threadpool_info()
        ],
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        report["torch_threads"] = torch.get_num_threads()
    return report


def settle(limit_s: float = 0.5, step_s: float = 0.01) -> float:
    """Wait until this process's threads stop using the CPU; returns the seconds waited.

    OpenBLAS's pool spins for about 0.1 s after each call (so do OpenMP pools, for less), which
    measured 1.5-2x slow samples at the start of the next timing, in this worker or the next.
    """
    start = time.perf_counter()
    while time.perf_counter() - start < limit_s:
        busy = time.process_time()  # CPU time of all the process's threads
        time.sleep(step_s)
        if time.process_time() - busy < 0.1 * step_s:
            break
    return time.perf_counter() - start
