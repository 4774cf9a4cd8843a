"""The sweep: every case of the grid, in rounds of fresh worker processes, results kept at once.

Round by round over the whole grid (as asv does): round 1 of every shape, dtype, d, then n
ascending, then round 2 of every shape, and so on. Within a round the implementations of a shape
take turns, each in a fresh worker process, after the reference workloads of that round
(matrix products, streaming reads) in a probe worker. So:
- two implementations' samples of a round come from the same seconds of the machine, and their
  ratio's interval resamples whole rounds (harness/stats.py);
- a case's rounds are minutes apart, in different phases of a shared machine, and in different
  processes (allocation, alignment, thread placement): what varies between them is inside the
  intervals, not hidden in one good or bad minute;
- each round is also expressed in units of its reference workload (`round_normalised`), which
  drifts with the machine, so that runs taken at different speeds can be compared;
- each shape's rows are written after each of its rounds (the last record of a case counts),
  so an interruption loses no round already measured.
A case's time is predicted from the same implementation's smaller cases (or a quick calibration
at small n): a case predicted over budget is skipped with its prediction instead of burning
minutes.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import numpy as np

import impls
from harness import stats
from harness.cases import Case
from harness.config import SweepConfig
from harness.progress import Progress
from harness.results import CASE_COLUMNS, RunDir
from harness.timing import CUDA_TIMER, SamplingPlan, round_spread, summarize
from harness.worker import Worker, WorkerLost

DEFAULT_EXPONENT = 2.0  # attention's time grows as n^2 until measured otherwise
# The reference workloads measured before every round of every shape, in a worker of its own:
# PEAK_REPEATS products of PEAK_SIZE^3 (their median is also the CPU peak a case's
# peak_fraction divides by: a median, as the times are) and as many streaming reads.
PEAK_SIZE = 2048
STREAM_BYTES = 64 << 20  # over the L2 of the machines seen, cheap to read (about 5 ms)
PEAK_REPEATS = 3
START_PEAK_REPEATS = 5  # the start and the end of a run: how far the machine drifted
WORKER_START_S = 0.5  # a fresh worker's start and the implementation's import, measured 0.3-0.5 s
CALIBRATION_N = 128  # a series starting above this n is first timed here, to predict it
UNSTABLE_WIDTH = 0.2  # a median whose interval spans more than 20% of it is flagged unstable


def plan_cases(config: SweepConfig, names: Iterable[str]) -> list[Case]:
    """Both masks of a shape one after the other: their ratio is taken in the same minute.
    With --tokens each n gets the batch tokens // n (a fixed number of tokens per case)."""
    return [
        Case(
            impl,
            n,
            d,
            dtype,
            config.tokens // n if config.tokens else config.batch,
            config.heads,
            causal,
            kv_heads=config.kv_heads or config.heads,
            n_q=config.n_q or n,
        )
        for dtype, d, n, causal, impl in itertools.product(
            config.dtype, sorted(config.d), sorted(config.n), sorted(config.causal), names
        )
    ]


def shape_key(case: Case) -> tuple:
    """Cases that differ only in the implementation: measured side by side."""
    return replace(case, impl="").key


def series_key(case: Case) -> tuple:
    """Cases that differ only in n (and with --tokens the batch, with --n-q unset n_q): one
    scaling curve."""
    fixed_n_q = case.n_q if case.n_q != case.n else None
    return (case.impl, case.dtype, case.d, case.heads, case.kv_heads, fixed_n_q, case.causal)


def predict_seconds(case: Case, measured: list[tuple[int, float]]) -> float | None:
    """Per-call time at case.n from (n, seconds) of smaller cases of the same series.

    Two or more points: the log-log slope of the two largest, clamped to [1, 3]. One point:
    the n^2 of attention. None without data.
    """
    points = sorted((n, s) for n, s in measured if n < case.n and s > 0)
    if not points:
        return None
    n1, s1 = points[-1]
    # n^2 when queries grow with the keys; a fixed query length (decode) reads n keys: n^1
    exponent = DEFAULT_EXPONENT if case.n_q == case.n else 1.0
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
            if series_key(replace(where, d=case.d)) == series_key(case) and (
                where.n <= case.n and where.d <= case.d
            ):
                return f"{why} (at n={where.n}, d={where.d})"
        return None

    def record(self, case: Case, row: dict) -> None:
        """What a row teaches: its time (the latest, for a case written after each round)."""
        if row.get("worker_lost"):
            self.lost.append((case, row["note"]))
        if row.get("status") in ("ok", "disagrees") and row.get("median_s"):
            self.learn(case, row["median_s"])
        elif row.get("status") == "skipped" and row.get("first_call_s"):
            self.learn(case, row["first_call_s"])

    def learn(self, case: Case, seconds: float) -> None:
        series = self.times.setdefault(series_key(case), [])
        series[:] = [(n, s) for n, s in series if n != case.n] + [(case.n, seconds)]


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
    if impl.simulated():
        return "simulated device: it checks correctness, its times mean nothing", None
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


def derived(
    case: Case, row: dict, peak_rates: Sequence[float] = (), read_rates: Sequence[float] = ()
) -> dict:
    """FLOP and byte rates, and the fractions of the measured limits (a CPU's: CPU rows only).

    `peak_rates` are the matrix products measured before the case's rounds (or, for a row
    without rounds, at the start of the run): the peak is their median (`gemm_gflops`), their
    best is kept beside it. `read_rates` are the fastest streaming reads of the case's bytes
    in each of its rounds: the bandwidth is their median. A case is memory-bound when its
    arithmetic intensity (FLOPs per byte) is below the machine's balance (peak / bandwidth).
    """
    out = {"flops": case.flops, "bytes": case.bytes, "score_matrix_bytes": case.score_matrix_bytes}
    if not row.get("median_s"):
        return out
    out["gflops"] = case.flops / row["median_s"] / 1e9
    out["gbps"] = case.bytes / row["median_s"] / 1e9
    if row.get("timer") == CUDA_TIMER:
        return out
    if peak_rates:
        out["gemm_gflops"] = statistics.median(peak_rates)
        out["gemm_best_gflops"] = max(peak_rates)
        out["gemm_rates"] = list(peak_rates)  # each product, kept in results.jsonl
        out["peak_fraction"] = out["gflops"] / out["gemm_gflops"]
    if read_rates:
        out["bandwidth_gbps"] = statistics.median(read_rates)
        out["bandwidth_rates"] = list(read_rates)
        out["bandwidth_fraction"] = out["gbps"] / out["bandwidth_gbps"]
    if peak_rates and read_rates:
        balance = out["gemm_gflops"] / out["bandwidth_gbps"]  # FLOPs per byte
        out["bound"] = "compute" if case.flops / case.bytes >= balance else "memory"
    return out


def drift_reference(case: Case, balance_flops_per_byte: float, timer: str | None) -> str:
    """'gemm' for a compute-bound case, 'stream' for a memory-bound one: whichever reference
    workload drifts as the case does. Attention reads q, k, v and writes the output once at
    best; below the machine's balance (its GEMM rate over its streaming rate) it waits on
    memory. 'none' for a GPU case: the references are the CPU's."""
    if timer == CUDA_TIMER:
        return "none"
    return "gemm" if case.flops / case.bytes >= balance_flops_per_byte else "stream"


def finish_case(first: dict, rounds_s: list[list[float]], probes: list[dict], reference: str):
    """The row's figures from its rounds: pooled statistics, the median's interval from
    resampling whole rounds, and each round in units of that round's reference workload."""
    samples = [s for round_s in rounds_s for s in round_s]
    pooled = summarize(samples)
    interval = stats.pooled_median(rounds_s)
    round_medians_s = [float(np.median(r)) for r in rounds_s]
    # The fastest of the round's reference runs: a lasting slow phase slows all of them, a
    # passing disturbance only some, and it is the lasting drift that the rate is to remove.
    column = {"gemm": "gemm_rates", "stream": "stream_gbps"}.get(reference)
    rates = [max(p[column]) if column else 1.0 for p in probes]
    normalised = [t * rate for t, rate in zip(round_medians_s, rates, strict=True)]
    row = dict(first)
    row.update(
        median_s=pooled.median_s,
        median_low_s=interval.low,
        median_high_s=interval.high,
        iqr_s=pooled.iqr_s,
        min_s=pooled.min_s,
        mean_s=pooled.mean_s,
        max_s=pooled.max_s,
        samples=pooled.samples,
        rounds=len(rounds_s),
        round_medians_s=round_medians_s,
        round_spread=round_spread(round_medians_s),
        # unknown (one round) or wide: not to be trusted alone
        unstable=not (interval.high - interval.low) <= UNSTABLE_WIDTH * interval.value,
        samples_s=samples,
        round_samples_s=[list(r) for r in rounds_s],
        drift_reference=reference,
        round_reference_rates=rates,
        round_normalised=normalised,
        normalised=float(np.median(normalised)),
    )
    return row


def ratio_fields(rows: dict[Case, dict], baseline: str) -> dict[Case, dict]:
    """Each case's time over the baseline's, round by round, with its interval."""
    base = next((row for case, row in rows.items() if case.impl == baseline), None)
    if base is None:
        return {}
    out = {}
    for case, row in rows.items():
        ratio = stats.paired_ratio(row["round_samples_s"], base["round_samples_s"])
        out[case] = {
            "baseline": baseline,
            "ratio": ratio.value,
            "ratio_low": ratio.low,
            "ratio_high": ratio.high,
        }
    return out


def precise_enough(rows: dict[Case, dict], baseline: str, ci: float) -> bool:
    """--ci: every ratio's interval within +-ci of it (each time's, without a baseline)."""
    for case, fields in ratio_fields(rows, baseline).items():
        if case.impl == baseline:
            continue
        value, low, high = fields["ratio"], fields["ratio_low"], fields["ratio_high"]
        if not max(high / value - 1, 1 - low / value) <= ci:  # NaN: one round, no interval
            return False
    if not any(case.impl == baseline for case in rows):
        for row in rows.values():
            if not max(row["median_high_s"] / row["median_s"] - 1,
                       1 - row["median_low_s"] / row["median_s"]) <= ci:  # fmt: skip
                return False
    return True


def complete(row: dict, rounds: int) -> bool:
    """Whether a recorded case is done: not interrupted between its rounds. (A resumed run
    measures an interrupted case again, all its rounds; its earlier records stay, superseded.)"""
    if row.get("status") not in ("ok", "disagrees") or not isinstance(row.get("rounds"), int):
        return True
    return row["rounds"] >= rounds or not isinstance(row.get("round_samples_s"), list)


def needs_calibration(case: Case, state: SweepState) -> bool:
    """A series' first case past CALIBRATION_N: nothing to predict it from, and a blind start
    could burn the case timeout on a hopeless case (the pure-Python loops at n = 10^5)."""
    return case.n > CALIBRATION_N and not state.times.get(series_key(case))


def calibrate(case: Case, workers: Workers, config: SweepConfig, state: SweepState) -> None:
    """One quick round of the same series at n = CALIBRATION_N (not recorded as a case), from
    which the case is predicted by its n^2 (see predict_seconds); a failure predicts nothing.

    Its fastest sample, not the median: a passing disturbance of a few samples (a stalled
    thread pool once took 400x the call) would otherwise skip a case as hopeless, while
    nothing makes a call faster than the code is."""
    tiny = case.at_n(CALIBRATION_N)
    plan = SamplingPlan(config.min_sample_s, 0.05, 1, 5)
    reply = workers.round(tiny, plan, config, None)
    if reply.get("round_samples_s"):
        state.learn(tiny, float(np.min(reply["round_samples_s"])))


def start_probe(config: SweepConfig, repeats: int) -> dict[str, dict]:
    """The reference workloads per dtype, in a worker with the sweep's threads."""
    helper = Worker(config.threads)
    try:
        return {
            dtype: helper.probe(dtype, PEAK_SIZE, repeats, STREAM_BYTES) for dtype in config.dtype
        }
    finally:
        helper.close()


def peak_summary(probes: dict[str, dict]) -> dict[str, float]:
    return {dtype: statistics.median(p["gemm_rates"]) for dtype, p in probes.items()}


@dataclass
class Workers:
    """The sweep's processes: a fresh one for every round of every case, and the probe."""

    threads: int
    timeout_s: float
    current: Worker | None = None
    probe_worker: Worker | None = None

    def round(self, case: Case, plan: SamplingPlan, config: SweepConfig, inner: int | None):
        """One round of `case` in a new worker, killed afterwards (it holds nothing worth a
        clean exit, and an exit's teardown would take CPU from the next worker's samples).
        A lost worker fails the case."""
        try:
            self.current = Worker(self.threads)
            return self.current.measure(
                case, plan, config.budget_s, config.seed, self.timeout_s, inner
            )
        except WorkerLost as lost:
            return {"status": "failed", "note": str(lost), "worker_lost": True}
        finally:
            if self.current is not None:
                self.current.kill()
                self.current = None

    def probe(self, case: Case, cold_cache: bool) -> dict | None:
        """The round's reference workloads, and the bandwidth of reading as many bytes as the
        shape's cases; None if the probe worker was lost (the round then has no reference, and
        the shape falls back to the run's start)."""
        try:
            if self.probe_worker is None:
                self.probe_worker = Worker(self.threads)
            return self.probe_worker.probe(
                case.dtype, PEAK_SIZE, PEAK_REPEATS, STREAM_BYTES, case.bytes, cold_cache
            )
        except WorkerLost:
            self.probe_worker = None
            return None

    def kill(self) -> None:
        for worker in (self.current, self.probe_worker):
            if worker is not None:
                worker.kill()

    def close(self) -> None:
        if self.probe_worker is not None:
            self.probe_worker.close()


@dataclass
class ShapeRounds:
    """The cases of one shape (they differ only in the implementation), round by round."""

    cases: list[Case]
    active: list[Case] = field(default_factory=list)  # measured, not failed or skipped
    predicted: dict[Case, float | None] = field(default_factory=dict)
    first: dict[Case, dict] = field(default_factory=dict)  # the first round's row, per case
    rounds_s: dict[Case, list[list[float]]] = field(default_factory=dict)
    probes: list[dict] = field(default_factory=list)  # per round

    def rows(self, start_probe: dict, balance: float) -> dict[Case, dict]:
        probes = [p or start_probe for p in self.probes]
        return {
            case: finish_case(
                self.first[case],
                self.rounds_s[case],
                probes,
                drift_reference(case, balance, self.first[case].get("timer")),
            )
            for case in self.first
        }


def method(config: SweepConfig, baseline: str) -> dict:
    """How this run measures, recorded in meta.json: compare warns when two runs differ in it."""
    return {
        "rounds": config.rounds,
        "ci": config.ci,
        "max_rounds": config.max_rounds,
        "round_process": "fresh worker per round of each case",
        "order": "round by round over the whole grid; in a round, shape by shape, a shape's "
        "implementations in turn",
        "statistic": "median",
        "interval": f"{stats.CONFIDENCE:.0%} percentile bootstrap over whole rounds (exact up "
        f"to {stats.EXACT_MAX_ROUNDS} rounds, else {stats.MONTE_CARLO_RESAMPLES} resamples)",
        "unstable": f"the median's interval spans more than {UNSTABLE_WIDTH:.0%} of it",
        "baseline": baseline,
        "references": {
            "gemm": f"{PEAK_REPEATS} products of {PEAK_SIZE}^3 before each round, the fastest",
            "stream": f"{PEAK_REPEATS} streaming reads of {STREAM_BYTES >> 20} MiB before each "
            "round, the fastest",
        },
        "bandwidth": f"{PEAK_REPEATS} reads of each shape's bytes by every thread before each "
        "of its rounds, in the same cache state; the median over rounds of each round's fastest",
        "cache": "cold: caches evicted before every timed call (CPU rows)"
        if config.cold_cache
        else "warm: calls back to back",
    }


def resolve_baseline(config: SweepConfig, names: Sequence[str]) -> str:
    if config.baseline:
        return config.baseline
    return "torch_sdpa" if "torch_sdpa" in names else "numpy"


def run_sweep(
    config: SweepConfig,
    run: RunDir,
    names: list[str],
    meta: dict,
    progress_factory: Callable[[int], Progress] = Progress,
) -> list[dict]:
    """Measure every case not yet in `run`; returns each case's last row written by this call.

    Round by round over the whole grid: round 1 of every shape (smallest first, which also
    decides what is skipped), then round 2 of every shape, and so on, so that a case's rounds
    are minutes apart, in different phases of a shared machine, and what varies between
    phases is inside its intervals. Each shape's rows are written after each of its rounds
    (the last record of a case counts), so an interruption loses no round already measured.
    """
    sweep = Sweep(config, run, names, meta, progress_factory)
    try:
        sweep.reference_at_start()
        shapes = [ShapeRounds(list(group)) for _, group in itertools.groupby(
            sweep.cases, key=shape_key)]  # fmt: skip
        for shape in shapes:
            sweep.decide(shape)
            sweep.measure_round(shape)
        for n_round in range(1, config.max_rounds if config.ci else config.rounds):
            for shape in shapes:
                if n_round < config.rounds or sweep.wants_more(shape):
                    sweep.measure_round(shape)
        if sweep.cases:  # the reference again: how far the machine's speed drifted
            with contextlib.suppress(WorkerLost):  # a lost probe costs only this figure
                meta["probe_end"] = start_probe(config, START_PEAK_REPEATS)
                meta["gemm_peak_end_gflops"] = peak_summary(meta["probe_end"])
                run.write_meta(meta)
    except BaseException:  # interrupted: a worker may be mid-case, do not wait for it
        sweep.workers.kill()
        raise
    finally:
        sweep.workers.close()
        sweep.progress.close()
    return list({tuple(row[c] for c in CASE_COLUMNS): row for row in sweep.written}.values())


class Sweep:
    """One call of run_sweep: its settings, its processes, and what it has learnt so far."""

    def __init__(self, config, run, names, meta, progress_factory):
        self.config, self.run, self.meta = config, run, meta
        self.started = time.monotonic()
        self.state = SweepState()
        done_keys = set()
        last = {tuple(row[c] for c in CASE_COLUMNS): row for row in run.rows()}
        for row in last.values():  # each case's last record
            case = Case(**{c: row[c] for c in CASE_COLUMNS})
            if complete(row, config.rounds):
                done_keys.add(case.key)
            self.state.record(case, row)
        self.cases = [c for c in plan_cases(config, names) if c.key not in done_keys]
        self.plan = SamplingPlan(
            config.min_sample_s,
            config.target_s,
            config.min_samples,
            config.max_samples,
            config.cold_cache,
        ).per_round(config.rounds)
        self.baseline = resolve_baseline(config, names)
        self.written: list[dict] = []
        self.progress = progress_factory(len(self.cases) * config.rounds)
        self.workers = Workers(config.threads, config.case_timeout_s)
        self.reserved_s = 0.0  # set aside for the later rounds of the cases that run

    def remaining_s(self) -> float:
        return self.config.sweep_budget_s - (time.monotonic() - self.started)

    def round_cost_s(self) -> float:
        """What a later round of a case is expected to take: its share of the target and a
        worker's start. Round 1 decides what runs, so it sets this much aside per round to
        come, for the sweep budget to hold."""
        return self.plan.target_s + WORKER_START_S

    def reference_at_start(self) -> None:
        probes = self.meta.get("probe_start", {})
        if self.cases and any(dtype not in probes for dtype in self.config.dtype):
            self.meta["probe_start"] = {**start_probe(self.config, START_PEAK_REPEATS), **probes}
            self.meta["gemm_peak_gflops"] = peak_summary(self.meta["probe_start"])
            self.run.write_meta(self.meta)

    def decide(self, shape: ShapeRounds) -> None:
        """Before a shape's first round: which of its cases run, and their predictions."""
        for case in shape.cases:
            remaining_s = self.remaining_s() - self.reserved_s
            reason, shape.predicted[case] = skip_reason(case, self.config, self.state, remaining_s)
            if reason is None and needs_calibration(case, self.state):
                self.progress.start(case)
                calibrate(case, self.workers, self.config, self.state)
                reason, shape.predicted[case] = skip_reason(
                    case, self.config, self.state, remaining_s
                )
            if reason is None:
                shape.active.append(case)
                self.reserved_s += (self.config.rounds - 1) * self.round_cost_s()
            else:
                self.progress.start(case)
                row = {"status": "skipped", "note": reason}
                self.record(case, row, shape, (), steps=self.config.rounds)

    def wants_more(self, shape: ShapeRounds) -> bool:
        """--ci: another round while a ratio's interval is wider than asked, within budget."""
        if not shape.active or len(shape.probes) >= self.config.max_rounds:
            return False
        if self.remaining_s() <= 0:
            return False
        return not precise_enough(self.rows(shape), self.baseline, self.config.ci)

    def measure_round(self, shape: ShapeRounds) -> None:
        """One round of each of the shape's cases, after the reference workloads; then the
        shape's rows, with the rounds so far."""
        if not shape.active:
            return
        n_round = len(shape.probes)
        shape.probes.append(self.workers.probe(shape.cases[0], self.config.cold_cache))
        for case in list(shape.active):
            self.progress.start(case)
            if 0 < n_round < self.config.rounds:
                self.reserved_s -= self.round_cost_s()
            inner = shape.first[case]["inner_repeats"] if n_round else None
            reply = self.workers.round(case, self.plan, self.config, inner)
            if "round_samples_s" in reply:
                shape.first.setdefault(case, reply)
                shape.rounds_s.setdefault(case, []).append(reply["round_samples_s"])
                continue
            # skipped (over budget), failed, or never timed: the case ends here
            shape.active.remove(case)
            row = {**shape.first.pop(case, {}), **reply}
            row.pop("round_samples_s", None)
            shape.rounds_s.pop(case, None)
            if n_round:
                row["note"] = f"round {n_round + 1}: {reply.get('note', '')}"
            steps = self.config.rounds - n_round if n_round < self.config.rounds else 0
            self.record(case, row, shape, (), steps=steps)
        rows = self.rows(shape)
        ratios = ratio_fields(rows, self.baseline)
        peaks = [r for p in shape.probes if p for r in p["gemm_rates"]]
        start = self.meta["probe_start"][shape.cases[0].dtype]["gemm_rates"]
        # each round's fastest read: a passing disturbance slows some reads, not the ceiling
        reads = [max(p["bandwidth_gbps"]) for p in shape.probes if p and p.get("bandwidth_gbps")]
        for case, row in rows.items():
            row.update(ratios.get(case, {}))
            steps = int(n_round < self.config.rounds)
            self.record(case, row, shape, peaks or start, steps=steps, reads=reads)

    def rows(self, shape: ShapeRounds) -> dict[Case, dict]:
        start = self.meta["probe_start"][shape.cases[0].dtype]
        balance = statistics.median(start["gemm_rates"]) / statistics.median(start["stream_gbps"])
        return shape.rows(start, balance)

    def record(
        self, case: Case, row: dict, shape: ShapeRounds, peaks, steps: int = 1, reads=()
    ) -> None:
        row = {
            **case.to_dict(),
            **row,
            **derived(case, row, peaks, reads),
            "predicted_s": shape.predicted.get(case),
            "measured_at": datetime.now(timezone.utc).isoformat(),
        }
        if "threading" in row:
            self.meta.setdefault("threading", {})[case.impl] = row.pop("threading")
        self.run.append(row)
        self.state.record(case, row)
        self.written.append(row)
        self.progress.finish(case, row, steps)
