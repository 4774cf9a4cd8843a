"""The plan: the grid as cases, what is left to measure, and each case's predicted time, from which
a case over budget is skipped instead of burning minutes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

import impls
from harness.cli.config import SweepConfig
from harness.results.cases import Case

DEFAULT_EXPONENT = 2.0  # attention's time grows as n^2 until measured otherwise
CALIBRATION_N = 128  # a series starting above this n is first timed here, to predict it


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
