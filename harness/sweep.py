"""The sweep: every case of the grid, each in its implementation's worker, results kept at once.

Order: dtype, d, n ascending, and the implementations of one shape side by side, each in its own
worker kept for the whole sweep, their samples taken in `rounds` interleaved rounds (A B C A B C
...). So implementations are compared on the same seconds of the machine: a shared machine's
speed drifts by 10-20% between minutes and within them, and ratios taken from cases measured
one after another drifted as much. Each case's time can still be predicted from the same
implementation's smaller cases measured before it: a case predicted over budget is skipped with
its prediction instead of burning minutes.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import impls
from harness.cases import Case
from harness.config import SweepConfig
from harness.results import CASE_COLUMNS, CUDA_TIMER, RunDir
from harness.timing import SamplingPlan
from harness.worker import ROUND_DONE, Worker, WorkerLost

DEFAULT_EXPONENT = 2.0  # attention's time grows as n^2 until measured otherwise
# The CPU matrix-product peak is the median rate of PEAK_SIZE^3 products, as every other
# figure of a sweep is a median: a best-of peak would set a kernel's typical speed against the
# product's luckiest, and fall with every extra product measured. CPU shapes of at least
# PEAK_ALONGSIDE_MIN_FLOPS get it measured alongside: PEAK_REPEATS products before each of
# their rounds, in a worker of its own. A machine's speed drifts by 10-20% within minutes (and
# a VM's swings in phases), so the peak measured at the start of a long sweep is not the peak
# at the time of its large cases. Smaller shapes, far from the peak anyway, use the start's.
PEAK_ALONGSIDE_MIN_FLOPS = 2.5e8  # full mask: n = 1024, d = 64 and up, the shapes near the peak
PEAK_SIZE = 2048
PEAK_REPEATS = 3  # products per round; the start and the end of a run take START_PEAK_REPEATS
START_PEAK_REPEATS = 5
PEAK_WORKER = "(matrix-product peak)"  # its key among the workers: no implementation's name


def plan_cases(config: SweepConfig, names: Iterable[str]) -> list[Case]:
    """Both masks of a shape one after the other: their ratio is taken in the same minute."""
    return [
        Case(impl, n, d, dtype, config.batch, config.heads, causal)
        for dtype, d, n, causal, impl in itertools.product(
            config.dtype, sorted(config.d), sorted(config.n), sorted(config.causal), names
        )
    ]


def shape_key(case: Case) -> tuple:
    """Cases that differ only in the implementation: measured side by side."""
    return (case.dtype, case.d, case.n, case.batch, case.heads, case.causal)


def series_key(case: Case) -> tuple:
    """Cases that differ only in n: one scaling curve."""
    return (case.impl, case.dtype, case.d, case.batch, case.heads, case.causal)


def predict_seconds(case: Case, measured: list[tuple[int, float]]) -> float | None:
    """Per-call time at case.n from (n, seconds) of smaller cases of the same series.

    Two or more points: the log-log slope of the two largest, clamped to [1, 3]. One point:
    the n^2 of attention. None without data.
    """
    points = sorted((n, s) for n, s in measured if n < case.n and s > 0)
    if not points:
        return None
    n1, s1 = points[-1]
    exponent = DEFAULT_EXPONENT
    if len(points) >= 2:
        n0, s0 = points[-2]
        exponent = min(3.0, max(1.0, math.log(s1 / s0) / math.log(n1 / n0)))
    return s1 * (case.n / n1) ** exponent


@dataclass
class SweepState:
    """What the sweep has learnt so far, per series and per implementation."""

    times: dict[tuple, list[tuple[int, float]]] = field(default_factory=dict)
    lost: list[tuple[Case, str]] = field(default_factory=list)  # where a worker was lost, why

    def lost_at(self, case: Case) -> str | None:
        """A crash or hang of this implementation on a case no larger than this one."""
        for where, why in self.lost:
            same = (where.impl, where.dtype, where.batch, where.heads, where.causal)
            if same == (case.impl, case.dtype, case.batch, case.heads, case.causal) and (
                where.n <= case.n and where.d <= case.d
            ):
                return f"{why} (at n={where.n}, d={where.d})"
        return None

    def record(self, case: Case, row: dict) -> None:
        if row.get("worker_lost"):
            self.lost.append((case, row["note"]))
        if row.get("status") in ("ok", "disagrees") and row.get("median_s"):
            self.times.setdefault(series_key(case), []).append((case.n, row["median_s"]))
        elif row.get("status") == "skipped" and row.get("first_call_s"):
            self.times.setdefault(series_key(case), []).append((case.n, row["first_call_s"]))


def skip_reason(
    case: Case, config: SweepConfig, state: SweepState, remaining_s: float
) -> tuple[str | None, float | None]:
    try:
        impl = impls.get(case.impl)
    except impls.UnknownImplementationError:
        return "no longer registered: its module is gone", None
    reason = impl.unavailable_reason()
    if reason is not None:
        return f"unavailable: {reason}", None
    if case.dtype not in impl.dtypes:
        return f"{case.impl} does not support {case.dtype}", None
    if case.causal and not impl.supports_causal:
        return f"{case.impl} does not support the causal mask", None
    if impl.device == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        return "CUDA simulator: it checks correctness, its times mean nothing", None
    lost = state.lost_at(case)
    if lost is not None:
        return f"after an earlier failure: {lost}", None
    predicted = predict_seconds(case, state.times.get(series_key(case), []))
    if predicted is not None:
        if predicted > config.budget_s:
            return f"predicted {predicted:.3g} s per call > budget {config.budget_s:g} s", predicted
        needed = max(config.target_s, config.min_samples * predicted) + 2 * predicted
        if needed > remaining_s:
            return (
                f"predicted {needed:.3g} s > {remaining_s:.3g} s left of the sweep budget",
                predicted,
            )
    return None, predicted


def derived(case: Case, row: dict, peak_rates: Sequence[float] = ()) -> dict:
    """FLOP rate, and its fraction of the measured peak: a CPU's, so only for CPU rows.

    `peak_rates` are the matrix products measured alongside the case's shape, or else at the
    start of the run: the peak is their median (`gemm_gflops`), their best is kept beside it.
    """
    out = {"flops": case.flops, "score_matrix_bytes": case.score_matrix_bytes}
    if row.get("median_s"):
        out["gflops"] = case.flops / row["median_s"] / 1e9
        if peak_rates and row.get("timer") != CUDA_TIMER:
            out["gemm_gflops"] = statistics.median(peak_rates)
            out["gemm_best_gflops"] = max(peak_rates)
            out["gemm_rates"] = list(peak_rates)  # each product, kept in results.jsonl
            out["peak_fraction"] = out["gflops"] / out["gemm_gflops"]
    return out


def wants_peak_alongside(case: Case) -> bool:
    """A large case of a CPU implementation: its peak fraction deserves a peak of its minute."""
    try:
        on_cpu = impls.get(case.impl).device == "cpu"
    except impls.UnknownImplementationError:
        return False
    return on_cpu and case.flops >= PEAK_ALONGSIDE_MIN_FLOPS


class Progress:
    """A live bar on a terminal; plain lines elsewhere (logs, CI)."""

    def __init__(self, total: int, stream=None):
        self.stream = stream or sys.stdout
        self.total, self.done = total, 0
        self.bar = None
        if self.stream.isatty():
            from rich.progress import (
                BarColumn,
                MofNCompleteColumn,
                TextColumn,
                TimeElapsedColumn,
                TimeRemainingColumn,
            )
            from rich.progress import (
                Progress as RichProgress,
            )

            self.bar = RichProgress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
            )
            self.task = self.bar.add_task("starting", total=total)
            self.bar.start()

    def start(self, case: Case) -> None:
        if self.bar is not None:
            self.bar.update(self.task, description=describe(case))

    def finish(self, case: Case, row: dict) -> None:
        self.done += 1
        line = f"[{self.done}/{self.total}] {describe(case)}: {summary(row)}"
        if self.bar is not None:
            self.bar.console.print(line, highlight=False, markup=False)
            self.bar.advance(self.task)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def describe(case: Case) -> str:
    shape = f"n={case.n} d={case.d} {case.dtype}"
    if case.batch > 1 or case.heads > 1:
        shape += f" B={case.batch} H={case.heads}"
    return f"{case.impl} {shape}" + (" causal" if case.causal else "")


def summary(row: dict) -> str:
    if row["status"] in ("ok", "disagrees") and row.get("median_s") is not None:
        text = f"{row['median_s'] * 1e3:.4g} ms"
        if row.get("gflops"):
            text += f", {row['gflops']:.3g} GFLOP/s"
        return text if row["status"] == "ok" else f"DISAGREES ({row['note']}); {text}"
    return f"{row['status']}: {row.get('note', '')}"


def measure_gemm(config: SweepConfig) -> dict[str, list[float]]:
    """GFLOP/s of each of START_PEAK_REPEATS matrix products per dtype, in a worker with the
    sweep's threads."""
    helper = Worker(config.threads)
    try:
        return {
            dtype: helper.gemm_rates(dtype, PEAK_SIZE, START_PEAK_REPEATS) for dtype in config.dtype
        }
    finally:
        helper.close()


def peak_summary(rates: dict[str, list[float]]) -> dict[str, float]:
    return {dtype: statistics.median(values) for dtype, values in rates.items()}


def run_sweep(
    config: SweepConfig,
    run: RunDir,
    names: list[str],
    meta: dict,
    progress_factory: Callable[[int], Progress] = Progress,
) -> list[dict]:
    """Measure every case not yet in `run`; returns the rows written by this call."""
    started = time.monotonic()
    state = SweepState()
    done_keys = set()
    for row in run.rows():
        case = Case(**{c: row[c] for c in CASE_COLUMNS})
        done_keys.add(case.key)
        state.record(case, row)
    cases = [c for c in plan_cases(config, names) if c.key not in done_keys]
    plan = SamplingPlan(
        config.min_sample_s, config.target_s, config.min_samples, config.max_samples
    )
    gemm = meta.setdefault("gemm_peak_rates", {})  # the start-of-run products, per dtype
    for dtype, peak in meta.get("gemm_peak_gflops", {}).items():  # a run from before the rates
        gemm.setdefault(dtype, [peak])  # keeps the peak its first rows were divided by
    written: list[dict] = []
    progress = progress_factory(len(cases))
    workers: dict[str, Worker] = {}  # one per implementation, started at its first case

    def ask(case: Case, first_round: bool) -> dict:
        """A round of `case` in its worker: ROUND_DONE or the row; a lost worker fails it."""
        try:
            if case.impl not in workers:
                workers[case.impl] = Worker(config.threads)
            worker = workers[case.impl]
            if first_round:
                reply = worker.measure(
                    case, plan, config.budget_s, config.seed, config.case_timeout_s, config.rounds
                )
            else:
                reply = worker.next_round(config.case_timeout_s)
        except WorkerLost as lost:
            workers.pop(case.impl, None)
            return {"status": "failed", "note": str(lost), "worker_lost": True}
        if "threading" in reply:
            meta.setdefault("threading", {})[case.impl] = reply.pop("threading")
        return reply

    def peak_alongside(round_cases: list[Case], peaks: list[float]) -> bool:
        """Before a round of cases about to run: if one is a large CPU case, PEAK_REPEATS
        matrix products, the peak of that moment. Returns whether it measured.

        A lost probe worker only costs the shape its local peak (the start-of-run one serves).
        """
        if not any(wants_peak_alongside(case) for case in round_cases):
            return False
        try:
            if PEAK_WORKER not in workers:
                workers[PEAK_WORKER] = Worker(config.threads)
            probe = workers[PEAK_WORKER]
            peaks.extend(probe.gemm_rates(round_cases[0].dtype, PEAK_SIZE, PEAK_REPEATS))
        except WorkerLost:
            workers.pop(PEAK_WORKER, None)
        return True

    def record(case: Case, reply: dict, predicted: float | None, peaks: list[float]) -> None:
        row = {
            **case.to_dict(),
            **reply,
            **derived(case, reply, peaks or gemm.get(case.dtype, ())),
            "predicted_s": predicted,
            "measured_at": datetime.now(timezone.utc).isoformat(),
        }
        run.append(row)
        state.record(case, row)
        written.append(row)
        progress.finish(case, row)

    try:
        if cases and any(dtype not in gemm for dtype in config.dtype):
            meta["gemm_peak_rates"] = gemm = {**measure_gemm(config), **gemm}
            meta["gemm_peak_gflops"] = peak_summary(gemm)
            run.write_meta(meta)
        for _, shape in itertools.groupby(cases, key=shape_key):
            pending: dict[Case, float | None] = {}  # measured in rounds, with their predictions
            peaks: list[float] = []  # the matrix products measured before each round
            probed = False  # in the first round: before the first case that runs
            for case in shape:
                progress.start(case)
                remaining = config.sweep_budget_s - (time.monotonic() - started)
                reason, predicted = skip_reason(case, config, state, remaining)
                if reason is not None:
                    reply = {"status": "skipped", "note": reason}
                else:
                    probed = probed or peak_alongside([case], peaks)
                    reply = ask(case, first_round=True)
                if reply == ROUND_DONE:
                    pending[case] = predicted
                else:
                    record(case, reply, predicted, peaks)
            for _ in range(config.rounds - 1):  # the other rounds, implementation by implementation
                peak_alongside(list(pending), peaks)
                for case, predicted in list(pending.items()):
                    progress.start(case)
                    reply = ask(case, first_round=False)
                    if reply != ROUND_DONE:
                        del pending[case]
                        record(case, reply, predicted, peaks)
        if cases:  # the peak again: how far the machine's speed drifted during the sweep
            meta["gemm_peak_end_rates"] = measure_gemm(config)
            meta["gemm_peak_end_gflops"] = peak_summary(meta["gemm_peak_end_rates"])
            run.write_meta(meta)
    except BaseException:  # interrupted: a worker may be mid-case, do not wait for it
        for worker in workers.values():
            worker.kill()
        workers.clear()
        raise
    finally:
        for worker in workers.values():
            worker.close()
        progress.close()
    return written
