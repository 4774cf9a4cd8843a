"""Confidence intervals from whole rounds: the unit that is independent (pure, no I/O).

Samples taken in one round, in one worker process within a second or two, share that moment's
machine speed; rounds are taken in fresh processes at different moments. So every interval here
resamples whole rounds (a cluster bootstrap), never single samples, as paired-benchmarking
tools (Duet, Tango) do. With few rounds the bootstrap distribution is enumerated exactly (every
multiset of rounds, with its multinomial weight), which makes the intervals deterministic and
checkable by hand; beyond EXACT_MAX_ROUNDS a seeded Monte Carlo bootstrap takes over.

A plain percentile interval from a few rounds is too narrow: from three rounds its "95%" held
the true ratio 76% of the time in a simulation of round-to-round noise (86% from five, 93%
from twelve), because the bootstrap sees only the spread of the rounds it has. So the tails are
the expanded percentile interval's (Hesterberg, "What teachers should know about the
bootstrap", 2015): the quantiles at Phi(-sqrt(n / (n - 1)) t_{n-1}) instead of 2.5%, which
widens the interval as Student's t does (from three rounds: their whole range).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as distributions

CONFIDENCE = 0.95
EXACT_MAX_ROUNDS = 7  # C(13, 7) = 1716 resamples
MAX_PAIRS = 20_000  # two runs: every pair of resamples up to 5 rounds each (126^2 pairs)
MONTE_CARLO_RESAMPLES = 4000
SEED = 20261201


@dataclass(frozen=True)
class Interval:
    """A statistic and its bootstrap confidence interval (NaN bounds from a single round)."""

    value: float
    low: float
    high: float


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


def expanded_tail(rounds: int, confidence: float = CONFIDENCE, df: int | None = None) -> float:
    """The probability in each tail of the expanded percentile interval from `rounds` rounds
    (Student's t with `df` degrees of freedom, rounds - 1 by default), where the plain one
    has (1 - confidence) / 2."""
    df = rounds - 1 if df is None else df
    t = distributions.t.ppf(1 - (1 - confidence) / 2, df)
    return float(distributions.norm.cdf(-math.sqrt(rounds / (rounds - 1)) * t))


def _quantiles(values: np.ndarray, weights: np.ndarray, tail: float) -> tuple[float, float]:
    """The smallest values whose cumulative probability reaches tail and 1 - tail."""
    order = np.argsort(values, kind="stable")
    cumulative = np.cumsum(weights[order])
    eps = 1e-12  # sums of float weights
    low = values[order][np.searchsorted(cumulative, tail - eps)]
    high = values[order][min(len(order) - 1, np.searchsorted(cumulative, 1 - tail - eps))]
    return float(low), float(high)


def round_interval(
    rounds: Sequence,
    statistic: Callable[[list], float],
    confidence: float = CONFIDENCE,
) -> Interval:
    """statistic(rounds) with an (expanded) percentile interval from resampling whole rounds."""
    if not rounds:
        raise ValueError("rounds: expected at least one round, got none")
    if len(rounds) == 1:  # one round says nothing of how rounds vary: no interval
        return Interval(float(statistic(list(rounds))), math.nan, math.nan)
    sets, weights = _resamples(len(rounds))
    values = np.array([statistic([rounds[i] for i in chosen]) for chosen in sets])
    low, high = _quantiles(values, weights, expanded_tail(len(rounds), confidence))
    return Interval(float(statistic(list(rounds))), low, high)


def _pooled(chosen: Sequence[Sequence[float]]) -> float:
    """The median of the rounds' samples, each round weighing the same whatever its number of
    samples (a round the machine ran slow in takes fewer samples in its time, and would
    otherwise weigh less). With equal numbers it is the plain median."""
    values = np.concatenate([np.asarray(r, dtype=np.float64) for r in chosen])
    weights = np.concatenate([np.full(len(r), 1.0 / len(r)) for r in chosen])
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    centres = (np.cumsum(weights) - weights / 2) / weights.sum()
    return float(np.interp(0.5, centres, values))


def pooled_median(round_samples: Sequence[Sequence[float]]) -> Interval:
    """The median of every sample of every round (each round weighing the same), its
    interval resampling whole rounds."""
    return round_interval([list(r) for r in round_samples], _pooled)


def paired_ratio(
    round_samples: Sequence[Sequence[float]], baseline_round_samples: Sequence[Sequence[float]]
) -> Interval:
    """median(all samples) / median(all the baseline's samples), the two having taken turns
    within each round; its interval resamples whole rounds, the same rounds for both.

    (A round may be one number, its median, as in runs that kept no more.) The pooled medians
    use every sample; a median of per-round ratios would rest on one round of three.
    """
    if len(round_samples) != len(baseline_round_samples):
        raise ValueError(
            f"rounds: expected as many rounds as the baseline's ({len(baseline_round_samples)}), "
            f"got {len(round_samples)}"
        )
    return round_interval(
        list(zip(round_samples, baseline_round_samples, strict=True)), _pooled_ratio
    )


def _as_samples(round_value) -> list[float]:
    return [float(round_value)] if np.ndim(round_value) == 0 else [float(x) for x in round_value]


def _pooled_samples(chosen: Sequence) -> float:
    return _pooled([_as_samples(r) for r in chosen])


def _pooled_ratio(chosen: Sequence) -> float:
    return _pooled([_as_samples(a) for a, _ in chosen]) / _pooled(
        [_as_samples(b) for _, b in chosen]
    )


def _resampled(rounds: Sequence, statistic: Callable) -> tuple[np.ndarray, np.ndarray]:
    """The statistic of each bootstrap resample of the rounds, and its probability."""
    sets, weights = _resamples(len(rounds))
    return np.array([statistic([rounds[i] for i in chosen]) for chosen in sets]), weights


def change(
    rounds_a: Sequence, rounds_b: Sequence, statistic: Callable = _pooled_samples
) -> Interval:
    """statistic(B) / statistic(A), by default of two runs' pooled samples (each round a list
    of samples, or one number), each run's rounds resampled independently (every pair of
    resamples, weighted by both probabilities, or a seeded draw of pairs when there are too
    many). The interval's tails are expanded for the fewer rounds of the two, with the
    degrees of freedom of both."""
    if len(rounds_a) == 0 or len(rounds_b) == 0:
        raise ValueError("rounds: expected at least one round on each side")
    value = statistic(list(rounds_b)) / statistic(list(rounds_a))
    if len(rounds_a) == 1 or len(rounds_b) == 1:  # no interval without rounds to resample
        return Interval(value, math.nan, math.nan)
    resampled_a, weights_a = _resampled(rounds_a, statistic)
    resampled_b, weights_b = _resampled(rounds_b, statistic)
    if len(resampled_a) * len(resampled_b) <= MAX_PAIRS:
        values = (resampled_b[None, :] / resampled_a[:, None]).ravel()
        weights = (weights_a[:, None] * weights_b[None, :]).ravel()
    else:
        rng = np.random.default_rng(SEED)
        pick_a = rng.choice(len(resampled_a), MONTE_CARLO_RESAMPLES, p=weights_a)
        pick_b = rng.choice(len(resampled_b), MONTE_CARLO_RESAMPLES, p=weights_b)
        values = resampled_b[pick_b] / resampled_a[pick_a]
        weights = np.full(MONTE_CARLO_RESAMPLES, 1.0 / MONTE_CARLO_RESAMPLES)
    fewer, df = min(len(rounds_a), len(rounds_b)), len(rounds_a) + len(rounds_b) - 2
    low, high = _quantiles(values, weights, expanded_tail(fewer, CONFIDENCE, df))
    return Interval(value, low, high)


def ratio_change(pairs_a: Sequence, pairs_b: Sequence) -> Interval:
    """How a ratio to the baseline moved from run A to run B: paired_ratio(B) / paired_ratio(A),
    each a list of rounds (the case's samples, the baseline's samples in the same turns), each
    run's rounds resampled whole."""
    return change(pairs_a, pairs_b, _pooled_ratio)


def verdict(interval: Interval, threshold: float) -> str:
    """'slower' / 'faster' when the whole interval of B/A lies beyond the threshold, else ''."""
    if interval.low > 1 + threshold:
        return "slower"
    if interval.high < 1 / (1 + threshold):
        return "faster"
    return ""


def relation(interval: Interval) -> str:
    """How a ratio to the baseline reads: 'faster' (below 1), 'slower' or 'tied' (1 inside, or
    no interval to tell)."""
    if interval.high < 1:
        return "faster"
    if interval.low > 1:
        return "slower"
    return "tied"
