"""The baseline's time over each implementation's, round by round, with intervals."""

from __future__ import annotations

import numpy as np

from harness.analysis.ratios import paired_ratios
from harness.analysis.runs import Runs, valid_rows
from harness.present.figures.panels import (
    FAR_SLOWER,
    label_narrow_log_y,
    legend,
    log2_axis,
    mark_unmeasured,
    missing_handle,
    n_label,
    note_far,
    per_d_panels,
    series,
)


def speedup_figure(runs: Runs, dtype: str, baseline: str):
    """Time of the baseline divided by each implementation's time, on the same machine."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, panels = per_d_panels(runs, dtype, f"Speedup over {baseline} (95% intervals)")
    for d, ax, frame in panels:
        missing, far = [], []
        ratios = paired_ratios(frame, baseline)
        for impl, machine, style, label, rows in series(runs, frame):
            base = valid_rows(frame[(frame["impl"] == baseline) & (frame["machine"] == machine)])
            merged = valid_rows(rows).merge(base[["n", "median_s"]], on="n", suffixes=("", "_base"))
            if merged.empty:
                missing.append(missing_handle(label, style))
                continue
            typical = float(np.median(merged["median_s_base"] / merged["median_s"]))
            if typical < FAR_SLOWER:  # it would squeeze the band where the comparisons are
                far.append(f"{label}: {typical:.2g}× (left out)")
                continue
            paired = ratios[(ratios["impl"] == impl) & (ratios["machine"] == machine)]
            if len(paired) == len(merged):  # round by round, with the interval drawn
                paired = paired.sort_values("n")
                speedup = 1 / paired["ratio"]
                ax.plot(paired["n"], speedup, label=label, **style)
                ax.errorbar(
                    paired["n"],
                    speedup,
                    yerr=[speedup - 1 / paired["ratio_high"], 1 / paired["ratio_low"] - speedup],
                    fmt="none",
                    ecolor=style["color"],
                    capsize=2,
                )
                continue
            speedup = merged["median_s_base"] / merged["median_s"]  # an older run: no rounds
            ax.plot(merged["n"], speedup, label=label, **style)
        ax.axhline(1.0, color="black", linewidth=0.8)
        note_far(ax, f"over {1 / FAR_SLOWER:g}× slower than {baseline}", far)
        base_ok = set(valid_rows(frame[frame["impl"] == baseline])["n"])
        lacking = sorted(set(valid_rows(frame)["n"]) - base_ok)
        if lacking:
            ax.text(
                0.02,
                0.02,
                f"no ratio at n = {', '.join(map(str, lacking))}: "
                f"{baseline} has no valid timing there",
                transform=ax.transAxes,
                fontsize="x-small",
                color="0.3",
            )
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}×"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        log2_axis(ax, frame["n"], n_label(frame))
        ax.set_ylabel(f"speedup over {baseline} (×, time ratio; >1 is faster)")
        ax.set_title(f"d = {d}", fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        statuses = mark_unmeasured(ax, runs, frame)
        label_narrow_log_y(ax, FuncFormatter(lambda value, _: f"{value:g}×"))
        legend(ax, runs, statuses, missing)
    return fig
