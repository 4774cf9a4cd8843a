"""Confidence intervals from whole rounds: the unit that is independent (pure, no I/O).

Samples taken in one round, in one worker process within a second or two, share that moment's
machine speed; rounds are taken in fresh processes at different moments. So every interval here
resamples whole rounds (a cluster bootstrap), never single samples, as paired-benchmarking
tools (Duet, Tango) do. With few rounds the bootstrap distribution is enumerated exactly (every
multiset of rounds, with its multinomial weight), which makes the intervals deterministic and
checkable by hand; beyond EXACT_MAX_ROUNDS a seeded Monte Carlo bootstrap takes over.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

CONFIDENCE = 0.95
EXACT_MAX_ROUNDS = 7  # C(13, 7) = 1716 resamples
MAX_PAIRS = 20_000  # two runs: every pair of resamples up to 5 rounds each (126^2 pairs)
MONTE_CARLO_RESAMPLES = 4000
SEED = 20261201


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap confidence interval; low == high for a single round."""

    value: float
    low: float
    high: float

    @property
    def width(self) -> float:
        """high / low: 1.0 is a point; 1.2 is about +-10% around the value."""
        return self.high / self.low if self.low > 0 else math.inf

    def excludes(self, x: float) -> bool:
        return x < self.low or x > self.high


def _resamples(rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """(index sets, probabilities) of the bootstrap resamples of `rounds` rounds.

    Exact: each multiset of round indices once, weighted by its multinomial probability.
    """
    if rounds <= EXACT_MAX_ROUNDS:
        sets = list(itertools.combinations_with_replacement(range(rounds), rounds))
        weights = []
        for chosen in sets:
            counts = np.bincount(chosen, minlength=rounds)
            ways = math.factorial(rounds) / math.prod(math.factorial(c) for c in counts)
            weights.append(ways / rounds**rounds)
        return np.array(sets), np.array(weights)
    rng = np.random.default_rng(SEED)
    sets = rng.integers(0, rounds, size=(MONTE_CARLO_RESAMPLES, rounds))
    return sets, np.full(MONTE_CARLO_RESAMPLES, 1.0 / MONTE_CARLO_RESAMPLES)


def _quantiles(values: np.ndarray, weights: np.ndarray, confidence: float) -> tuple[float, float]:
    """The smallest values whose cumulative probability reaches (1 -+ confidence) / 2."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    tail = (1 - confidence) / 2
    eps = 1e-12  # sums of float weights
    low = values[order][np.searchsorted(cumulative, tail - eps)]
    high = values[order][min(len(order) - 1, np.searchsorted(cumulative, 1 - tail - eps))]
    return float(low), float(high)


def round_interval(
    rounds: Sequence,
    statistic: Callable[[list], float],
    confidence: float = CONFIDENCE,
) -> Interval:
    """statistic(rounds) with a percentile interval from resampling whole rounds."""
    if not rounds:
        raise ValueError("rounds: expected at least one round, got none")
    sets, weights = _resamples(len(rounds))
    values = np.array([statistic([rounds[i] for i in chosen]) for chosen in sets])
    low, high = _quantiles(values, weights, confidence)
    return Interval(float(statistic(list(rounds))), low, high)


def median_of_rounds(round_values: Sequence[float]) -> Interval:
    """The median of per-round figures (ratios, normalised times) and its interval."""
    return round_interval(list(round_values), lambda chosen: float(np.median(chosen)))


def pooled_median(round_samples: Sequence[Sequence[float]]) -> Interval:
    """The median of every sample of every round, its interval resampling whole rounds."""
    return round_interval(
        [list(r) for r in round_samples],
        lambda chosen: float(np.median([s for r in chosen for s in r])),
    )


def paired_ratio(round_medians: Sequence[float], baseline_medians: Sequence[float]) -> Interval:
    """time / baseline time, round by round (the two took turns within each round): the
    median of the per-round ratios and its interval."""
    if len(round_medians) != len(baseline_medians):
        raise ValueError(
            f"rounds: expected as many rounds as the baseline's ({len(baseline_medians)}), "
            f"got {len(round_medians)}"
        )
    return median_of_rounds([t / b for t, b in zip(round_medians, baseline_medians, strict=True)])


def change(rounds_a: Sequence[float], rounds_b: Sequence[float]) -> Interval:
    """median(B) / median(A) of per-round figures of two runs, each run's rounds resampled
    independently (every pair of resamples, weighted by both probabilities)."""
    if len(rounds_a) == 0 or len(rounds_b) == 0:
        raise ValueError("rounds: expected at least one round on each side")
    a, b = np.asarray(rounds_a, float), np.asarray(rounds_b, float)
    sets_a, weights_a = _resamples(len(a))
    sets_b, weights_b = _resamples(len(b))
    medians_a, medians_b = np.median(a[sets_a], axis=1), np.median(b[sets_b], axis=1)
    if len(medians_a) * len(medians_b) <= MAX_PAIRS:
        values = (medians_b[None, :] / medians_a[:, None]).ravel()
        weights = (weights_a[:, None] * weights_b[None, :]).ravel()
    else:  # a seeded draw of pairs, each side by its own probabilities
        rng = np.random.default_rng(SEED)
        pick_a = rng.choice(len(medians_a), MONTE_CARLO_RESAMPLES, p=weights_a)
        pick_b = rng.choice(len(medians_b), MONTE_CARLO_RESAMPLES, p=weights_b)
        values = medians_b[pick_b] / medians_a[pick_a]
        weights = np.full(MONTE_CARLO_RESAMPLES, 1.0 / MONTE_CARLO_RESAMPLES)
    low, high = _quantiles(values, weights, CONFIDENCE)
    return Interval(float(np.median(b) / np.median(a)), low, high)


def verdict(interval: Interval, threshold: float) -> str:
    """'slower' / 'faster' when the whole interval of B/A lies beyond the threshold, else ''."""
    if interval.low > 1 + threshold:
        return "slower"
    if interval.high < 1 / (1 + threshold):
        return "faster"
    return ""


def relation(interval: Interval) -> str:
    """How a ratio to the baseline reads: 'faster' (below 1), 'slower' or 'tied' (1 inside)."""
    if interval.high < 1:
        return "faster"
    if interval.low > 1:
        return "slower"
    return "tied"
