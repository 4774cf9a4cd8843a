"""Time per call against the head dimension, at one n."""

from __future__ import annotations

import pandas as pd

from harness.analysis.runs import Runs, fit_exponent
from harness.present.figures.panels import (
    eng_y,
    figure_title,
    label_narrow_log_y,
    legend,
    legend_lines,
    log2_axis,
    mark_unmeasured,
    new_figure,
    valid_series,
)


def fixed_n(frame: pd.DataFrame) -> int:
    """The largest n at which most (more than half) implementations are ok at every d.

    Falls back to the n where the most are, when no n has a majority.
    """
    impls = frame["impl"].nunique()
    ds = frame["d"].nunique()
    ok = frame[frame["status"] == "ok"].groupby(["n", "impl"])["d"].nunique()
    counts = (ok == ds).groupby(level="n").sum()
    if counts.empty:
        return int(frame["n"].max())
    majority = counts[counts * 2 > impls]
    return int(majority.index.max()) if not majority.empty else int(counts.idxmax())


def time_vs_d_figure(runs: Runs, dtype: str, n: int | None = None):
    """Time per call against the head dimension, at one n (largest where most are ok)."""
    from matplotlib.ticker import EngFormatter

    frame = runs.frame[runs.frame["dtype"] == dtype]
    n = fixed_n(frame) if n is None else n
    frame = frame[frame["n"] == n]
    title = figure_title(f"Time per call vs head dimension at n = {n}", runs, dtype)
    fig, axes = new_figure(1, title, lines=legend_lines(runs))
    ax = axes[0]
    missing = []
    for style, label, ok in valid_series(runs, frame, missing):
        ok = ok.sort_values("d")
        exponent = fit_exponent(ok["d"], ok["median_s"], points=len(ok))
        slope = "" if exponent is None else rf"  $\propto d^{{{exponent:.2f}}}$"
        ax.plot(ok["d"], ok["median_s"], label=f"{label}{slope}", **style)
    ax.set_yscale("log")
    eng_y(ax, "s")
    log2_axis(ax, runs.frame.loc[runs.frame["dtype"] == dtype, "d"], "head dimension d")
    ax.set_ylabel("time per call (s), median")
    ax.grid(True, which="major", alpha=0.3)
    statuses = mark_unmeasured(ax, runs, frame, x="d")
    label_narrow_log_y(ax, EngFormatter(unit="s"))
    legend(ax, runs, statuses, missing)
    return fig
