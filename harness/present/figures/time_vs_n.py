"""Time per call against n, log-log, with the median's interval and each line's fitted exponent."""

from __future__ import annotations

from harness.analysis.runs import FIT_POINTS, Runs, band_s, fit_exponent
from harness.present.figures.panels import (
    eng_y,
    legend,
    log2_axis,
    mark_unmeasured,
    n_label,
    n_words,
    per_d_panels,
    valid_series,
)


def time_vs_n_figure(runs: Runs, dtype: str):
    """Median time per call against n, log-log, its interval as a band, fitted exponent in
    each label."""
    fig, panels = per_d_panels(runs, dtype, f"Time per call vs {n_words(runs.frame)}")
    for d, ax, frame in panels:
        missing = []
        for style, label, ok in valid_series(runs, frame, missing):
            exponent = fit_exponent(ok["n"], ok["median_s"])
            slope = "" if exponent is None else rf"  $\propto n^{{{exponent:.2f}}}$"
            ax.plot(ok["n"], ok["median_s"], label=f"{label}{slope}", **style)
            low, high = zip(*(band_s(row) for _, row in ok.iterrows()), strict=True)
            ax.fill_between(ok["n"], low, high, color=style["color"], alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        eng_y(ax, "s")
        log2_axis(ax, frame["n"], n_label(frame))
        ax.set_ylabel("time per call (s), median and 95% interval")
        ax.set_title(f"d = {d}  (slope fitted over the {FIT_POINTS} largest n)", fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        statuses = mark_unmeasured(ax, runs, frame)
        legend(ax, runs, statuses, missing)
    return fig
