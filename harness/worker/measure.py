"""Measuring one case inside a worker process: compile apart, samples in turns, memory,
agreement."""

from __future__ import annotations

import contextlib
import time
import traceback
from dataclasses import replace

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


def _loaded(case: Case, seed: int):
    impl = impls.get(case.impl)
    return impl, impls.check_attention_args(*case_inputs(case, seed), causal=case.causal)


class HeldCase:
    """A case prepared in this worker and sampled in turns, while the shape's other
    implementations take theirs in workers of their own (harness/sweep/pool.py).

    Its first round (inner None) also compiles, checks the output against the reference and,
    after the turns, measures the call's memory. Failures are returned as data, never raised.
    """

    def __init__(self, case: Case, plan: SamplingPlan, budget_s: float, seed: int, inner):
        self.case, self.plan, self.budget_s, self.seed = case, plan, budget_s, seed
        self.first_round = inner is None
        self.inner = inner
        self.samples: list[float] = []
        self.compile_parts = (0.0, 0.0)  # (first prepare - warm prepare, first run) in seconds

    def open(self) -> dict:
        """Ready to sample ("ready": True with the row so far), or the case's row if not."""
        try:
            return self._open_first() if self.first_round else self._open_later()
        except Exception as exc:  # noqa: BLE001 - a failing implementation is a result
            return failure(exc)

    def _open_first(self) -> dict:
        """Compile, check, then a warm prepare and call (compile_s is what the first call cost
        beyond a warm one; implementations may compile in prepare or in the first run)."""
        row: dict = {"status": "ok", "note": ""}
        self.impl, args = _loaded(self.case, self.seed)
        with numba_compilations() as compile_source:
            first_prepare_s, call = timed(lambda: self.impl.prepare_checked(args))
            first_run_s, _ = timed(call.run)
        row["compile_source"] = compile_source()
        row["variant"] = call.variant()
        threads_after_import()
        row.update(check_output(call, args))
        del call
        warm_prepare_s, self.call = timed(lambda: self.impl.prepare_checked(args))
        self.args = args
        self.sample, warm_call_s = sampler(self.impl, self.call, self.plan.cold_cache)
        row["first_call_s"] = first_prepare_s + first_run_s
        if warm_call_s > self.budget_s:
            over = f"one call took {warm_call_s:.3g} s > budget {self.budget_s:g} s per sample"
            if row["status"] == "ok":
                row.update(status="skipped", note=over)
            else:  # a disagreement stays the finding
                row["note"] += f"; not timed: {over}"
            return row
        self.compile_parts = (max(0.0, first_prepare_s - warm_prepare_s), first_run_s)
        self.inner = self.plan.calls_per_sample(warm_call_s)
        row.update(
            inner_repeats=self.inner,
            timer=CUDA_TIMER if self.call.timed_on_device else "perf_counter",
        )
        return self._ready(row, warm_call_s)

    def _open_later(self) -> dict:
        self.impl, args = _loaded(self.case, self.seed)
        self.call = self.impl.prepare_checked(args)
        threads_after_import()
        self.sample, warm_call_s = sampler(self.impl, self.call, self.plan.cold_cache)
        return self._ready({"status": "ok"}, warm_call_s)

    def _ready(self, row: dict, warm_call_s: float) -> dict:
        self.warm_call_s = warm_call_s
        settle()  # the reference check's or the warm call's BLAS threads spin on
        return {**row, "ready": True}

    def turn(self, turn_s: float, max_samples: int) -> dict:
        """Samples for turn_s (at least one), after one untimed call where a call is shorter
        than the turn (the first call after a quiet spell ran 10-80% slow: pools waking,
        caches refilling); then quiet, before the next worker's turn."""
        try:
            if self.warm_call_s < turn_s:
                self.sample(1)
            plan = replace(self.plan, target_s=turn_s, min_samples=1, max_samples=max_samples)
            samples = take_samples(self.sample, plan, self.warm_call_s, inner=self.inner)[0]
        except Exception as exc:  # noqa: BLE001 - a failing implementation is a result
            return failure(exc)
        self.samples += samples
        settle()
        return {"samples": samples}

    def close(self) -> dict:
        """The first round's last figures: compile time, transfers, memory."""
        if not self.first_round:
            return {}
        try:
            prepare_s, first_run_s = self.compile_parts
            row = {"compile_s": prepare_s + max(0.0, first_run_s - float(np.median(self.samples)))}
            if self.call.impl.has_hook("transfer_s"):
                self.call.fetch()  # the device-to-host copy is a transfer, not in the samples
                row["transfer_s"] = self.call.transfer_s()
            device_bytes = self.call.device_memory_bytes()
            if device_bytes is not None:
                row["peak_mem_bytes"] = device_bytes
                return row
            del self.call, self.sample  # only the measured call's own state may be resident
            self.impl.release_workspace()  # scratch kept between calls counts as the call's
            row["peak_mem_bytes"] = peak_extra_bytes(lambda: whole_call(self.impl, self.args))
            return row
        except Exception as exc:  # noqa: BLE001 - a failing implementation is a result
            return failure(exc)


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
