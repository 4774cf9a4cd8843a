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

import functools
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


@functools.cache
def _resamples(rounds: int) -> tuple[np.ndarray, np.ndarray]:
    """(counts, probabilities) of the bootstrap resamples of `rounds` rounds: a row per
    resample, how often it draws each round. The same for every interval from as many rounds
    (the Monte Carlo draw is seeded), so made once and kept read-only.

    Exact: each multiset of rounds once, weighted by its multinomial probability.
    """
    if rounds <= EXACT_MAX_ROUNDS:
        sets = itertools.combinations_with_replacement(range(rounds), rounds)
        counts = np.array([np.bincount(chosen, minlength=rounds) for chosen in sets])
        ways = np.array([math.prod(math.factorial(c) for c in row) for row in counts], float)
        weights = math.factorial(rounds) / ways / rounds**rounds
    else:
        rng = np.random.default_rng(SEED)
        sets = rng.integers(0, rounds, size=(MONTE_CARLO_RESAMPLES, rounds))
        counts = (sets[:, :, None] == np.arange(rounds)).sum(axis=1)
        weights = np.full(MONTE_CARLO_RESAMPLES, 1.0 / MONTE_CARLO_RESAMPLES)
    counts.setflags(write=False)
    weights.setflags(write=False)
    return counts, weights


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
    statistic: Callable[[Sequence, np.ndarray], np.ndarray],
    confidence: float = CONFIDENCE,
) -> Interval:
    """The statistic of the rounds with an (expanded) percentile interval from resampling whole
    rounds. `statistic(rounds, counts)` is its value for each row of counts (how often each
    round is drawn): every resample at once."""
    if not rounds:
        raise ValueError("rounds: expected at least one round, got none")
    value = _point(rounds, statistic)
    if len(rounds) == 1:  # one round says nothing of how rounds vary: no interval
        return Interval(value, math.nan, math.nan)
    values, weights = _resampled(rounds, statistic)
    low, high = _quantiles(values, weights, expanded_tail(len(rounds), confidence))
    return Interval(value, low, high)


def _resampled(rounds: Sequence, statistic: Callable) -> tuple[np.ndarray, np.ndarray]:
    """The statistic of each bootstrap resample of the rounds, and its probability."""
    counts, weights = _resamples(len(rounds))
    return statistic(rounds, counts), weights


CELLS_AT_ONCE = 1 << 18  # resamples x samples per step of _pooled_samples: 2 MB arrays


def _pooled_samples(rounds: Sequence, counts: np.ndarray) -> np.ndarray:
    """The median of the samples of each resample's rounds (each round a list of samples, or
    one number), each round weighing the same whatever its number of samples (a round the
    machine ran slow in takes fewer samples in its time, and would otherwise weigh less); a
    round drawn twice counts twice. With equal numbers of samples it is the plain median."""
    samples = [np.atleast_1d(np.asarray(r, dtype=np.float64)).ravel() for r in rounds]
    sizes = np.array([len(x) for x in samples])
    owner = np.repeat(np.arange(len(samples)), sizes)
    values = np.concatenate(samples)
    order = np.lexsort((owner, values))  # by value; ties in the order of their rounds
    values, owner = values[order], owner[order]
    weight = 1.0 / sizes[owner]
    step = max(1, CELLS_AT_ONCE // len(values))
    return np.concatenate(
        [
            _weighted_medians(values, weight, counts[first : first + step, owner])
            for first in range(0, len(counts), step)
        ]
    )


def _weighted_medians(values: np.ndarray, weight: np.ndarray, copies: np.ndarray) -> np.ndarray:
    """For each row of copies (how often each sorted value is drawn), np.interp(0.5) over the
    centres of every drawn copy's weight, as if the copies were listed one by one: the copies
    of one value span a flat stretch from the centre of the first to that of the last."""
    drawn = copies > 0
    w = copies * weight
    cumulative = np.cumsum(w, axis=1)
    total = w.sum(axis=1, keepdims=True)
    last = (cumulative - weight / 2) / total
    first = np.where(copies > 1, (cumulative - w + weight / 2) / total, last)
    rows, columns = np.arange(len(copies)), np.arange(len(values))
    below = drawn & (first <= 0.5)
    lo = len(values) - 1 - np.argmax(below[:, ::-1], axis=1)  # the last copy to start by 1/2
    after = drawn & (columns > lo[:, None])
    hi = np.argmax(after, axis=1)  # the next value drawn
    with np.errstate(divide="ignore", invalid="ignore"):
        slope = (values[hi] - values[lo]) / (first[rows, hi] - last[rows, lo])
        between = slope * (0.5 - last[rows, lo]) + values[lo]
    flat = (last[rows, lo] >= 0.5) | ~after.any(axis=1)
    inside = np.where(flat, values[lo], between)
    return np.where(below.any(axis=1), inside, values[np.argmax(drawn, axis=1)])


def pooled_median(round_samples: Sequence[Sequence[float]]) -> Interval:
    """The median of every sample of every round (each round weighing the same), its
    interval resampling whole rounds."""
    return round_interval(list(round_samples), _pooled_samples)


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


def _pooled_ratio(pairs: Sequence, counts: np.ndarray) -> np.ndarray:
    """Of rounds that are (samples, the baseline's samples) pairs: the pooled medians' ratio."""
    return _pooled_samples([a for a, _ in pairs], counts) / _pooled_samples(
        [b for _, b in pairs], counts
    )


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
    value = float(_point(rounds_b, statistic) / _point(rounds_a, statistic))
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


def _point(rounds: Sequence, statistic: Callable) -> float:
    """The statistic of the rounds themselves, each drawn once."""
    return float(statistic(list(rounds), np.ones((1, len(rounds)), dtype=np.int64))[0])


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
