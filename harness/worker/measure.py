"""Measuring one case inside a worker process: compile apart, samples, memory, agreement."""

from __future__ import annotations

import contextlib
import time
import traceback

import numpy as np

import impls
from harness.results.cases import Case
from harness.results.schema import CUDA_TIMER
from harness.worker import checking
from harness.worker.caches import evict_caches
from harness.worker.inputs import case_inputs
from harness.worker.memory import peak_extra_bytes
from harness.worker.threads import settle, threads_after_import
from harness.worker.timing import SamplingPlan, cpu_sampler, take_samples

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
        threads_after_import()
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
        threads_after_import()
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
