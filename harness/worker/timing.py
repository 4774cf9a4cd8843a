"""Timing: calibrated repetitions (pure loop) and their statistics (pure, no I/O).

A sample is one timed batch of `inner` back-to-back calls, divided by `inner`; `inner` is chosen
so that a sample lasts at least `min_sample_s`, which keeps the clock's resolution and call
overhead out of tiny cases. Samples are taken after a warm-up until there are at least
`min_samples` and `target_s` has passed (or `max_samples`). Every sample is kept.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Stats:
    median_s: float
    iqr_s: float
    min_s: float
    mean_s: float
    max_s: float
    samples: int


def round_spread(round_medians_s: list[float]) -> float:
    """The slowest round's median over the fastest round's (kept as a plain-number summary of
    how far the rounds disagree; the interval is in harness/analysis/stats.py)."""
    return max(round_medians_s) / min(round_medians_s)


def summarize(samples_s) -> Stats:
    """Median, interquartile range (linear-interpolated quartiles), min, mean and max."""
    x = np.asarray(samples_s, dtype=np.float64)
    if x.size == 0:
        raise ValueError("samples_s: expected at least one sample, got none")
    q1, median, q3 = np.percentile(x, [25, 50, 75])
    return Stats(
        median_s=float(median),
        iqr_s=float(q3 - q1),
        min_s=float(x.min()),
        mean_s=float(x.mean()),
        max_s=float(x.max()),
        samples=int(x.size),
    )


@dataclass(frozen=True)
class SamplingPlan:
    min_sample_s: float = 0.02
    target_s: float = 1.0
    min_samples: int = 5
    max_samples: int = 100
    cold_cache: bool = False  # one call per sample, the caches evicted before each (untimed)

    def per_round(self, rounds: int) -> SamplingPlan:
        """One of `rounds` equal shares: together they take at least min_samples in target_s."""
        return SamplingPlan(
            self.min_sample_s,
            self.target_s / rounds,
            math.ceil(self.min_samples / rounds),
            max(1, self.max_samples // rounds),
            self.cold_cache,
        )

    def calls_per_sample(self, call_s: float) -> int:
        """1 with cold caches (each call after an eviction), else enough calls for a sample
        to last min_sample_s."""
        return 1 if self.cold_cache else inner_repeats(call_s, self.min_sample_s)


def inner_repeats(call_s: float, min_sample_s: float) -> int:
    """Calls per sample so that a sample lasts at least min_sample_s."""
    return max(1, math.ceil(min_sample_s / max(call_s, 1e-9)))


def cpu_sampler(
    run: Callable[[], None], clock=time.perf_counter, before: Callable[[], None] | None = None
) -> Callable[[int], float]:
    """Wall time of `inner` back-to-back calls; with `before` (a cache eviction), the time of
    `inner` calls each after its own untimed `before`."""

    def sample(inner: int) -> float:
        start = clock()
        for _ in range(inner):
            run()
        return clock() - start

    def sample_after(inner: int) -> float:
        total = 0.0
        for _ in range(inner):
            before()
            start = clock()
            run()
            total += clock() - start
        return total

    return sample if before is None else sample_after


def take_samples(
    sample: Callable[[int], float],
    plan: SamplingPlan,
    warm_call_s: float,
    clock=time.perf_counter,
    inner: int | None = None,
) -> tuple[list[float], int]:
    """Seconds per call for each sample, and the calls per sample used (`inner`, or enough
    for a sample to last min_sample_s)."""
    inner = inner or plan.calls_per_sample(warm_call_s)
    samples: list[float] = []
    start = clock()
    while len(samples) < plan.max_samples:
        samples.append(sample(inner) / inner)
        if len(samples) >= plan.min_samples and clock() - start >= plan.target_s:
            break
    return samples, inner
