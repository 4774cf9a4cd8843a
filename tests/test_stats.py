"""Intervals from whole rounds, against numbers worked by hand (exact bootstrap enumeration)."""

import math

import numpy as np
import pytest

from harness.analysis import stats


def binomial_at_least(k, trials, p):
    return sum(math.comb(trials, j) * p**j * (1 - p) ** (trials - j) for j in range(k, trials + 1))


def test_three_rounds_give_the_range_of_their_medians():
    # Resampling 3 rounds: the median is the smallest value when at least 2 of the 3 draws are
    # it, probability 7/27 > 2.5%, so the 95% interval runs from the smallest to the largest.
    assert binomial_at_least(2, 3, 1 / 3) == pytest.approx(7 / 27)
    interval = stats.pooled_median([[4.0], [1.0], [2.0]])
    assert (interval.value, interval.low, interval.high) == (2.0, 1.0, 4.0)


def test_two_rounds():
    # {1, 1}: 1 (1/4), {1, 3}: 2 (1/2), {3, 3}: 3 (1/4)
    assert stats.pooled_median([[1.0], [3.0]]) == stats.Interval(2.0, 1.0, 3.0)


def test_the_tails_are_expanded_for_few_rounds():
    # Phi(-sqrt(n / (n - 1)) t_{0.975, n - 1}): n = 7, t = 2.4469, x 1.0801 = 2.6430, 0.41%;
    # n = 30 nears the plain 2.5%.
    assert stats.expanded_tail(7) == pytest.approx(0.00411, abs=1e-5)
    assert stats.expanded_tail(3) < 1e-6
    assert 0.018 < stats.expanded_tail(30) < 0.025


def test_seven_rounds_keep_the_extremes_where_a_plain_interval_drops_them():
    # P(resampled median = 1) = P(at least 4 of 7 draws are the 1) = 1.0%: under the plain
    # 2.5% tail (which would start the interval at 2, where P(median <= 2) = 10.8%), over the
    # expanded 0.41%, so the interval runs from the smallest round to the largest.
    assert binomial_at_least(4, 7, 1 / 7) == pytest.approx(0.01015, abs=1e-5)
    assert binomial_at_least(4, 7, 2 / 7) == pytest.approx(0.1083, abs=1e-4)
    rounds = [[float(v)] for v in range(1, 8)]
    values, weights = stats._resampled(rounds, stats._pooled_samples)
    assert stats._quantiles(values, weights, 0.025) == (2.0, 6.0)
    interval = stats.pooled_median(rounds)
    assert (interval.low, interval.value, interval.high) == (1.0, 4.0, 7.0)


def test_five_rounds_hold_the_true_ratio_nine_times_in_ten():
    """Rounds of 20 samples each side, the ratio moving 3.5% from round to round and each
    sample 3% (log-normal, as measured on a shared 2-core machine): the expanded interval from
    5 rounds holds the true ratio in at least 90% of 200 seeded draws; the plain percentile
    interval of the same draws in under 90%."""
    rng = np.random.default_rng(5)
    expanded = plain = 0
    for _ in range(200):
        rounds = [
            (list(0.4 * np.exp(rng.normal(0, 0.035) + rng.normal(0, 0.03, 20))),
             list(np.exp(rng.normal(0, 0.03, 20))))
            for _ in range(5)
        ]  # fmt: skip
        interval = stats.paired_ratio(*zip(*rounds, strict=True))
        expanded += interval.low <= 0.4 <= interval.high
        values, weights = stats._resampled(rounds, stats._pooled_ratio)
        low, high = stats._quantiles(values, weights, 0.025)
        plain += low <= 0.4 <= high
    assert expanded / 200 >= 0.9 > plain / 200


def test_many_rounds_use_a_seeded_monte_carlo_bootstrap():
    values = [1.0, 1.1, 0.9, 1.05, 0.95, 1.02, 0.98, 1.01, 0.99]
    rounds = [[v] for v in values]
    first, again = stats.pooled_median(rounds), stats.pooled_median(rounds)
    assert first == again  # seeded: the same interval every time
    assert 0.9 <= first.low <= first.value == 1.0 <= first.high <= 1.1


def test_a_paired_ratio_cancels_what_both_rounds_share():
    # The machine ran 1x, 2x, 4x slow in the three rounds: each round's ratio is exactly 2.
    assert stats.paired_ratio([2.0, 4.0, 8.0], [1.0, 2.0, 4.0]) == stats.Interval(2.0, 2.0, 2.0)
    with pytest.raises(ValueError, match="rounds: expected as many rounds"):
        stats.paired_ratio([1.0, 2.0], [1.0])


def test_a_change_of_ratios_cancels_each_run_s_drift():
    """Run A's rounds ran 1x, 2x, 0.5x slow and its ratio was 2 in each; run B's ran 1x, 1.3x,
    0.8x slow with a ratio of 2.4: the change is 1.2 exactly, interval and all, where the
    change of the times alone spreads from 0.48 (B's fastest over A's slowest) to 3.12."""
    a = [([2.0], [1.0]), ([4.0], [2.0]), ([1.0], [0.5])]
    b = [([2.4], [1.0]), ([3.12], [1.3]), ([1.92], [0.8])]
    assert stats.ratio_change(a, b) == stats.Interval(pytest.approx(1.2), 1.2, 1.2)
    times = stats.change([case for case, _ in a], [case for case, _ in b])
    assert (times.low, times.high) == (pytest.approx(1.92 / 4.0), pytest.approx(3.12 / 1.0))


def test_each_round_weighs_the_same_whatever_its_number_of_samples():
    """Three samples of 1 and one of 3: weights 1/6, 1/6, 1/6, 1/2 centred at 1/12, 3/12, 5/12
    and 3/4; the half-way point lies a quarter of the way from 5/12 to 3/4, so 1 + 2 / 4. The
    plain median of the four samples (1) would let the round with more samples decide."""
    assert stats.pooled_median([[1.0, 1.0, 1.0], [3.0]]).value == 1.5
    assert stats.pooled_median([[1.0, 2.0], [3.0, 4.0]]).value == 2.5  # equal counts: plain


def listed_one_by_one(rounds, drawn):
    """The pooled median by its definition: every sample of every drawn round listed (a round
    drawn twice, twice), weighing 1 / its round's samples, np.interp at the half-way point."""
    chosen = [rounds[i] for i, times in enumerate(drawn) for _ in range(times)]
    values = np.concatenate(chosen)
    weights = np.concatenate([np.full(len(r), 1.0 / len(r)) for r in chosen])
    order = np.argsort(values, kind="stable")
    centres = (np.cumsum(weights[order]) - weights[order] / 2) / weights.sum()
    return np.interp(0.5, centres, values[order])


def test_every_resample_at_once_is_each_resample_listed_one_by_one():
    """Rounds of 1 to 9 samples, 1000 random draws of them (rounds drawn twice or never):
    the vectorised statistic is the definition's, to rounding."""
    rng = np.random.default_rng(3)
    rounds = [rng.lognormal(0, 0.1, rng.integers(1, 10)) for _ in range(6)]
    counts = rng.multinomial(6, [1 / 6] * 6, size=1000)
    expected = [listed_one_by_one(rounds, drawn) for drawn in counts]
    np.testing.assert_allclose(stats._pooled_samples(rounds, counts), expected, rtol=1e-14)


def test_a_ratio_holds_when_the_slower_code_takes_fewer_samples():
    """The machine runs 1x, 2x, 4x slow; A takes half B's time each round and, in the same
    seconds, more samples. Each round's ratio is 1/2, and so is the figure; the plain medians
    of all samples (1 and 3 of A's 7 and B's 4 samples) would make it 1/3."""
    a, b = [[1.0] * 4, [2.0] * 2, [4.0]], [[2.0] * 2, [4.0], [8.0]]
    assert (stats.paired_ratio(a, b).value, stats.paired_ratio(a, b).high) == (0.5, 0.5)


def test_pooled_median_resamples_rounds_not_samples():
    # Rounds {1, 1.1}, {2, 2.1}, {4, 4.1}: the pooled median of a resample of whole rounds.
    interval = stats.pooled_median([[1.0, 1.1], [2.0, 2.1], [4.0, 4.1]])
    assert interval.value == 2.05
    assert (interval.low, interval.high) == (1.05, 4.05)


def test_verdict_and_relation():
    assert stats.verdict(stats.Interval(1.12, 1.06, 1.18), 0.05) == "slower"
    assert stats.verdict(stats.Interval(1.12, 1.04, 1.18), 0.05) == ""  # reaches inside 5%
    assert stats.verdict(stats.Interval(0.85, 0.80, 0.94), 0.05) == "faster"
    assert stats.relation(stats.Interval(0.5, 0.4, 0.6)) == "faster"
    assert stats.relation(stats.Interval(1.5, 1.4, 1.6)) == "slower"
    assert stats.relation(stats.Interval(0.98, 0.9, 1.05)) == "tied"


def test_no_rounds_is_refused():
    with pytest.raises(ValueError, match="rounds: expected at least one round"):
        stats.pooled_median([])


def test_one_round_has_no_interval_and_is_never_called_faster_or_marked():
    one = stats.pooled_median([[2.0]])
    assert one.value == 2.0 and math.isnan(one.low) and math.isnan(one.high)
    assert stats.relation(stats.paired_ratio([[1.0]], [[2.0]])) == "tied"  # cannot tell
    assert stats.verdict(stats.change([[1.0]], [[2.0]]), 0.05) == ""
