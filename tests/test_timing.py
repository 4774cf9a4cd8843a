"""Statistics and sampling, checked against numbers worked by hand."""

import threading
import time

import pytest

from harness.worker.threads import settle
from harness.worker.timing import SamplingPlan, inner_repeats, round_spread, summarize, take_samples


def test_summary_of_hand_worked_samples():
    # sorted: 1 2 3 4 10; quartiles by linear interpolation: q1 = 2, median = 3, q3 = 4
    stats = summarize([3.0, 1.0, 10.0, 2.0, 4.0])
    assert (stats.median_s, stats.iqr_s, stats.min_s, stats.max_s) == (3.0, 2.0, 1.0, 10.0)
    assert stats.mean_s == pytest.approx(4.0)
    assert stats.samples == 5


def test_even_count_median_and_quartiles():
    stats = summarize([1.00, 1.02, 1.01, 1.03])
    assert stats.median_s == pytest.approx(1.015)
    assert stats.iqr_s == pytest.approx(0.015)  # q1 = 1.0075, q3 = 1.0225


def test_round_spread_is_the_slowest_rounds_median_over_the_fastests():
    # round medians 1.0, 1.3 and 1.1: the machine slowed down in the second round
    assert round_spread([1.0, 1.3, 1.1]) == pytest.approx(1.3)
    assert round_spread([2.5]) == 1.0  # one round: nothing to disagree with


def test_summary_refuses_no_samples():
    with pytest.raises(ValueError, match="samples_s: expected at least one sample"):
        summarize([])


def test_inner_repeats_make_a_sample_last_long_enough():
    assert inner_repeats(1e-6, 0.02) == 20000
    assert inner_repeats(0.5, 0.02) == 1
    assert inner_repeats(0.0, 0.02) > 0


class FakeClock:
    """Time that passes only when a test's fake sample says so."""

    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_take_samples_stops_at_target_time_after_minimum_count():
    clock = FakeClock()

    def sample(inner):
        clock.now += 0.1 * inner
        return 0.1 * inner

    plan = SamplingPlan(min_sample_s=0.0, target_s=0.95, min_samples=5, max_samples=100)
    samples, inner = take_samples(sample, plan, warm_call_s=0.1, clock=clock)
    assert inner == 1
    assert len(samples) == 10  # 10 x 0.1 s reaches the 0.95 s target
    assert samples == pytest.approx([0.1] * 10)


def test_take_samples_takes_the_minimum_even_past_the_target():
    clock = FakeClock()

    def sample(inner):
        clock.now += 5.0
        return 5.0 * inner

    plan = SamplingPlan(min_sample_s=0.0, target_s=1.0, min_samples=5, max_samples=100)
    samples, _ = take_samples(sample, plan, warm_call_s=5.0, clock=clock)
    assert len(samples) == 5


def test_tiny_calls_are_repeated_inside_a_sample_and_divided_back():
    calls = []

    def sample(inner):
        calls.append(inner)
        return 1e-5 * inner

    plan = SamplingPlan(min_sample_s=0.01, target_s=0.0, min_samples=3, max_samples=3)
    samples, inner = take_samples(sample, plan, warm_call_s=1e-5)
    assert inner == 1000 and calls == [1000] * 3
    assert samples == pytest.approx([1e-5] * 3)


def test_rounds_share_the_plan_and_together_keep_its_minimum():
    plan = SamplingPlan(min_sample_s=0.02, target_s=1.0, min_samples=5, max_samples=100)
    share = plan.per_round(3)
    assert share.target_s == pytest.approx(1.0 / 3)
    assert 3 * share.min_samples >= 5 and 3 * share.max_samples <= 100
    assert share.min_sample_s == 0.02  # the same inner repeats in every round
    assert plan.per_round(1) == plan


def test_settle_waits_while_a_thread_of_the_process_is_still_busy():
    """A BLAS pool spinning after its last call would share the cores with the next samples."""
    until = time.perf_counter() + 0.2

    def spin():
        while time.perf_counter() < until:
            pass

    spinner = threading.Thread(target=spin)
    spinner.start()
    waited = settle(limit_s=5.0)
    spinner.join()
    assert waited >= 0.15
    assert settle(limit_s=5.0) < 1.0  # nothing busy: it returns at the first quiet step
