"""A case's row from its rounds: pooled statistics, intervals, rates, ratios to the baseline, and
each round in units of its reference workload.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

import numpy as np

from harness.analysis import stats
from harness.results.cases import Case
from harness.results.schema import CUDA_TIMER
from harness.worker.timing import round_spread, summarize

UNSTABLE_WIDTH = 0.2  # a median whose interval spans more than 20% of it is flagged unstable


def derived(
    case: Case,
    row: dict,
    peak_rates: Sequence[float] = (),
    read_rates: Sequence[Sequence[float]] = (),
) -> dict:
    """FLOP and byte rates, and the fractions of the measured limits (a CPU's: CPU rows only).

    `peak_rates` are the matrix products measured before the case's rounds (or, for a row
    without rounds, at the start of the run): the peak is their median (`gemm_gflops`), their
    best is kept beside it. `read_rates` are the streaming reads of the case's bytes before
    each of its rounds: the bandwidth is the median over rounds of each round's median read,
    typical against the case's typical time as the peak is; the median of each round's
    fastest read is kept beside it. A case is memory-bound when its arithmetic intensity
    (FLOPs per byte) is below the machine's balance (peak / bandwidth).
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
        out["bandwidth_gbps"] = statistics.median(statistics.median(r) for r in read_rates)
        out["bandwidth_best_gbps"] = statistics.median(max(r) for r in read_rates)
        out["bandwidth_rates"] = [list(r) for r in read_rates]  # each read, by round
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
        median_s=interval.value,  # each round weighing the same (pooled.median_s need not)
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
