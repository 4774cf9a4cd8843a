"""The sweep, round by round over the whole grid: which cases run, each round of each shape after
its reference workloads, each shape's rows written after each of its rounds.
"""

from __future__ import annotations

import contextlib
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

import impls
from harness.cli.config import SweepConfig
from harness.results.cases import Case
from harness.results.rundir import RunDir
from harness.results.schema import CASE_COLUMNS
from harness.sweep.plan import (
    CALIBRATION_N,
    SweepState,
    complete,
    needs_calibration,
    plan_cases,
    shape_key,
    skip_reason,
)
from harness.sweep.pool import WorkerLost, Workers
from harness.sweep.probes import START_PEAK_REPEATS, peak_summary, round_probe, start_probe
from harness.sweep.progress import Progress
from harness.sweep.rows import derived, drift_reference, finish_case, precise_enough, ratio_fields
from harness.worker.timing import SamplingPlan

WORKER_START_S = 0.5  # a fresh worker's start and the implementation's import, measured 0.3-0.5 s
# --ci trusts no interval from fewer rounds: from 3 its "95%" holds the ratio 3 times in 4, from
# 5 more than 9 in 10 (docs/MEASUREMENT.md), and three rounds that happen to agree would stop it.
CI_MIN_ROUNDS = 5


def calibrate(case: Case, workers: Workers, config: SweepConfig, state: SweepState) -> None:
    """One quick round of the same series at n = CALIBRATION_N (not recorded as a case), from
    which the case is predicted by its n^2 (see predict_seconds); a failure predicts nothing.

    Its fastest sample, not the median: a passing disturbance of a few samples (a stalled
    thread pool once took 400x the call) would otherwise skip a case as hopeless, while
    nothing makes a call faster than the code is."""
    tiny = case.at_n(CALIBRATION_N)
    plan = SamplingPlan(config.min_sample_s, 0.05, 1, 5)
    reply = workers.round([tiny], plan, config, {tiny: None})[tiny]
    if reply.get("round_samples_s"):
        state.learn(tiny, float(np.min(reply["round_samples_s"])))


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


def resolve_baseline(config: SweepConfig, names: Sequence[str]) -> str:
    if config.baseline:
        return config.baseline
    return impls.default_baseline(names)


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
        """--ci: another round while a ratio's interval is wider than asked, or rests on fewer
        than CI_MIN_ROUNDS rounds, within budget."""
        if not shape.active or len(shape.probes) >= self.config.max_rounds:
            return False
        if self.remaining_s() <= 0:
            return False
        if len(shape.probes) < CI_MIN_ROUNDS:
            return True
        return not precise_enough(self.rows(shape), self.baseline, self.config.ci)

    def measure_round(self, shape: ShapeRounds) -> None:
        """One round of the shape's cases, taking turns, after the reference workloads; then
        the shape's rows, with the rounds so far."""
        if not shape.active:
            return
        n_round = len(shape.probes)
        shape.probes.append(round_probe(self.workers, shape.cases[0], self.config.cold_cache))
        cases = list(shape.active)
        self.progress.start(cases[0])
        inners = {case: shape.first[case]["inner_repeats"] if n_round else None for case in cases}
        replies = self.workers.round(cases, self.plan, self.config, inners)
        for case in cases:
            if 0 < n_round < self.config.rounds:
                self.reserved_s -= self.round_cost_s()
            reply = replies[case]
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
        reads = [p["bandwidth_gbps"] for p in shape.probes if p and p.get("bandwidth_gbps")]
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
