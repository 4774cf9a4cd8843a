"""Ratios to a baseline, round by round, with intervals (pure: tables in, tables out).

Within a round the implementations of a shape took turns, so their samples come from the same
seconds of the machine; the figure is the ratio of their medians over all rounds, and its
interval resamples whole rounds, the same rounds for both (harness/analysis/stats.py). A ratio
whose interval holds 1 is a tie: the run cannot tell the two apart.
"""

from __future__ import annotations

import math

import pandas as pd

import impls
from harness.analysis import stats
from harness.results.cases import SHAPE_FIELDS

# A measured shape: the case's fields but the implementation, the machine and the workload;
# tables sort by dtype, d and n first.
SORTED_FIRST = ("dtype", "d", "n")
SHAPE = [
    "machine",
    *SORTED_FIRST,
    *(name for name in SHAPE_FIELDS if name not in SORTED_FIRST),
    "workload",
]
COLUMNS = [*SHAPE, "impl", "baseline", "ratio", "ratio_low", "ratio_high", "relation"]


def default_baseline(frame: pd.DataFrame, metas: dict) -> str:
    """The run's own baseline, else the registry's default among those measured."""
    for meta in metas.values():
        chosen = meta.get("method", {}).get("baseline")
        if chosen in set(frame["impl"]):
            return chosen
    return impls.default_baseline(frame["impl"])


def round_values(row) -> list | None:
    """Each round's samples, or (runs that kept no more) each round's median."""
    for column in ("round_samples_s", "round_medians_s"):
        values = row.get(column)
        if isinstance(values, list) and values:
            return list(values)
    return None


def paired_ratios(frame: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """time / baseline time per (shape, implementation) where both are ok with equal rounds;
    `relation` says faster (the whole interval below 1), slower, or tied."""
    ok = frame[frame["status"] == "ok"]
    rows = []
    for key, shape in ok.groupby(SHAPE, sort=True):
        base = shape[shape["impl"] == baseline]
        if base.empty or round_values(base.iloc[0]) is None:
            continue
        base_rounds = round_values(base.iloc[0])
        for _, row in shape.iterrows():
            rounds = round_values(row)
            if row["impl"] == baseline or rounds is None or len(rounds) != len(base_rounds):
                continue
            interval = stats.paired_ratio(rounds, base_rounds)
            rows.append(
                {
                    **dict(zip(SHAPE, key, strict=True)),
                    "impl": row["impl"],
                    "baseline": baseline,
                    "ratio": interval.value,
                    "ratio_low": interval.low,
                    "ratio_high": interval.high,
                    "relation": stats.relation(interval),
                }
            )
    return pd.DataFrame(rows, columns=COLUMNS)


def format_ratio(ratio: float, low: float, high: float) -> str:
    """'0.48× [0.41, 0.51]': time over the baseline's, below 1 is faster."""
    if math.isnan(low) or math.isnan(high):
        return f"{ratio:.3g}× (one round: no interval)"
    return f"{ratio:.3g}× [{low:.3g}, {high:.3g}]"
