"""Measuring one case inside a worker process: compile apart, samples, memory, agreement."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
import time
import traceback
from pathlib import Path

import numpy as np
from numba import njit, prange

import impls
from harness import checking
from harness.cases import Case, case_inputs
from harness.timing import CUDA_TIMER, SamplingPlan, cpu_sampler, take_samples

CHECKED_ROWS = 64  # large cases are checked on this many evenly spread query rows


@contextlib.contextmanager
def numba_compilations():
    """Yields a function telling whether numba compiled, loaded from its disk cache, or neither."""
    from numba.core import event

    with (
        event.install_recorder("numba:compile") as compiles,
        event.install_recorder("numba:compiler_lock") as lock_uses,
    ):
        yield (
            lambda: "compiled" if compiles.buffer else "disk cache" if lock_uses.buffer else "none"
        )


def _proc_status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def release_free_memory() -> None:
    """Give freed heap pages back to the OS (glibc's malloc_trim), so that memory a previous
    call freed but kept resident cannot hide this call's allocations from the high-water mark."""
    with contextlib.suppress(OSError, AttributeError):  # not glibc: the mark may undercount
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def peak_extra_bytes(run) -> int | None:
    """Peak resident memory one call adds, from Linux's resettable high-water mark (VmHWM).

    This counts every allocation the call touches (NumPy's, Numba's runtime, BLAS buffers,
    torch's), not only what Python's allocator sees. None where /proc does not offer it.
    """
    release_free_memory()
    try:
        with open("/proc/self/clear_refs", "w") as clear:
            clear.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _proc_status_bytes("VmRSS")
    run()
    peak = _proc_status_bytes("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before)


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


def whole_call(impl: impls.Implementation, args: impls.AttentionArgs) -> None:
    """prepare, run and fetch: workspace allocated in prepare counts as the call's memory."""
    call = impl.prepare_checked(args)
    call.run()
    impl.module.fetch(call.state)  # the raw result: its contract was checked already


def checked_rows(n_q: int) -> np.ndarray | None:
    if n_q <= 4 * CHECKED_ROWS:
        return None
    return np.unique(np.linspace(0, n_q - 1, CHECKED_ROWS).round().astype(np.int64))


def check_output(call: impls.PreparedCall, args: impls.AttentionArgs) -> dict:
    """Agreement with the float64 reference (on evenly spread rows for large cases)."""
    rows = checked_rows(args.q.shape[1])
    result = {"checked_rows": "all" if rows is None else len(rows)}
    try:
        out = call.fetch()
    except impls.ImplementationError as exc:  # wrong shape or dtype
        return {**result, "status": "disagrees", "note": str(exc)}
    agreement = checking.compare(out, args, rows)
    result.update(
        max_abs_err=agreement.max_abs_err,
        max_rel_err=agreement.max_rel_err,
        tolerance=agreement.tolerance,
    )
    if not agreement.ok:
        result["status"] = "disagrees"
        result["note"] = agreement.problem or (
            f"max_rel_err {agreement.max_rel_err:.3g} at {agreement.where} "
            f"> tolerance {agreement.tolerance:.3g}"
        )
    return result


def measure_case(case: Case, plan: SamplingPlan, budget_s: float, seed: int) -> dict:
    """The first round of a case, in a fresh worker: compilation, agreement, one round of
    samples, memory. Failures are returned as data, never raised.

    compile_s is what the first call cost beyond a warm one: (first prepare - a second, warm
    prepare) + (first run - this round's median run). Implementations may compile inside
    prepare or inside the first run; either way it never enters the samples, which come after
    a warm-up call.
    """
    row: dict = {"status": "ok", "note": ""}
    try:
        impl = impls.get(case.impl)
        args = impls.check_attention_args(*case_inputs(case, seed), causal=case.causal)
        with numba_compilations() as compile_source:
            first_prepare_s, call = timed(lambda: impl.prepare_checked(args))
            first_run_s, _ = timed(call.run)
        row["compile_source"] = compile_source()
        row["variant"] = call.variant()
        _threads_after_import()
        row.update(check_output(call, args))
        del call
        warm_prepare_s, call = timed(lambda: impl.prepare_checked(args))
        sample, warm_call_s = sampler(impl, call, plan.cold_cache)
        row["first_call_s"] = first_prepare_s + first_run_s
        if warm_call_s > budget_s:
            over = f"one call took {warm_call_s:.3g} s > budget {budget_s:g} s per sample"
            if row["status"] == "ok":
                row.update(status="skipped", note=over)
            else:  # a disagreement stays the finding
                row["note"] += f"; not timed: {over}"
            return row
        inner = plan.calls_per_sample(warm_call_s)
        samples = warm_then_sample(sample, plan, warm_call_s, inner)
        row.update(
            round_samples_s=samples,
            inner_repeats=inner,
            compile_s=max(0.0, first_prepare_s - warm_prepare_s)
            + max(0.0, first_run_s - float(np.median(samples))),
            timer=CUDA_TIMER if call.timed_on_device else "perf_counter",
        )
        if call.impl.has_hook("transfer_s"):
            call.fetch()  # the device-to-host copy is part of the transfers, not of the samples
            row["transfer_s"] = call.transfer_s()
        device_bytes = call.device_memory_bytes()
        if device_bytes is not None:
            row["peak_mem_bytes"] = device_bytes
        else:
            del call, sample  # only the measured call's own state may be resident
            impl.release_workspace()  # scratch kept between calls counts as the call's
            row["peak_mem_bytes"] = peak_extra_bytes(lambda: whole_call(impl, args))
    except Exception as exc:  # noqa: BLE001 - a failing implementation is a result
        row.update(failure(exc))
    return row


def measure_round(case: Case, plan: SamplingPlan, seed: int, inner: int) -> dict:
    """A later round of a case, in a fresh worker: prepare, a warm-up call, then samples of
    `inner` calls each (the first round's size, so that rounds are alike)."""
    try:
        impl = impls.get(case.impl)
        args = impls.check_attention_args(*case_inputs(case, seed), causal=case.causal)
        call = impl.prepare_checked(args)
        _threads_after_import()
        sample, warm_call_s = sampler(impl, call, plan.cold_cache)
        samples = warm_then_sample(sample, plan, warm_call_s, inner)
        return {"status": "ok", "round_samples_s": samples}
    except Exception as exc:  # noqa: BLE001 - a failing implementation is a result
        return failure(exc)


def warm_then_sample(sample, plan: SamplingPlan, warm_call_s: float, inner: int) -> list[float]:
    """Quiet (the reference check's or the warm-up's BLAS threads spin on), one untimed sample
    (the first after a quiet spell was 10-80% slow in a fresh worker: sleeping pools waking),
    then the samples."""
    settle()
    sample(inner)
    return take_samples(sample, plan, warm_call_s, inner=inner)[0]


def sampler(impl: impls.Implementation, call: impls.PreparedCall, cold_cache: bool = False):
    """(sample(inner) -> seconds of `inner` calls, one warm call's seconds): CUDA events where
    the implementation times itself on its device, else the wall clock around `run` (after an
    untimed eviction of the CPU caches before each call, with cold_cache)."""
    if call.timed_on_device:

        def sample(inner: int) -> float:
            return sum(call.event_time_s() for _ in range(inner))

        return sample, call.event_time_s()
    warm_call_s, _ = timed(call.run)
    return cpu_sampler(call.run, before=evict_caches if cold_cache else None), warm_call_s


def failure(exc: Exception) -> dict:
    return {
        "status": "failed",
        "note": f"{type(exc).__name__}: {exc}",
        "traceback": "".join(traceback.format_exception(exc)[-6:]),
    }


def timed(fn):
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


_THREADS: int | None = None


def set_threads(threads: int) -> dict:
    """The same thread count for numba, the BLAS pools and (when loaded) torch; what was set."""
    global _THREADS
    _THREADS = threads
    import numba
    from threadpoolctl import threadpool_limits

    threadpool_limits(threads)
    numba.set_num_threads(threads)
    _threads_after_import()
    return {"numba": numba.get_num_threads(), "blas": threads}


def _threads_after_import() -> None:
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


EVICT_MIN_BYTES = 128 << 20  # what is written when the cache size is unknown, or small


@functools.lru_cache(maxsize=1)
def _eviction_buffer() -> np.ndarray:
    llc = last_level_cache_bytes() or 0
    return np.empty(max(EVICT_MIN_BYTES, 4 * llc) // 4, np.float32)


def evict_caches() -> None:
    """Write a buffer four times the last-level cache from every thread (as triton's do_bench
    writes one to the L2 of a GPU), so that the next call finds its inputs in DRAM."""
    _parallel_fill(_eviction_buffer(), 16)


def read_rates(size_bytes: int, repeats: int, cold_cache: bool = False) -> list[float]:
    """GB/s of `repeats` streaming reads of size_bytes by every thread of this worker (numba's
    pool, the one the sweep sized): the bandwidth a case moving that many bytes could reach, in
    the same cache state (warm: read again and again; cold_cache: evicted before each read)."""
    data = np.ones(max(size_bytes, 4096) // 4, np.float32)
    _parallel_read(data, 16)  # compiled (or loaded), pages touched
    reads = 1 if cold_cache else max(1, (1 << 20) * 64 // data.nbytes)  # a sample >= 64 MiB
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


@njit(parallel=True, cache=True)
def _parallel_fill(x, chunks):
    per = -(-x.size // chunks)
    for c in prange(chunks):
        x[c * per : min(x.size, (c + 1) * per)] = np.float32(c)
