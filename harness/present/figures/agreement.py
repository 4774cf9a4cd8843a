"""The largest error relative to max|v| against n, with the tolerance."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.runs import Runs
from harness.present.figures.panels import (
    figure_title,
    legend,
    legend_lines,
    log2_axis,
    mark_unmeasured,
    n_label,
    new_figure,
    series,
)


def agreement_figure(runs: Runs):
    """Largest error relative to max|v| against n, per dtype (rows) and d (columns), with the
    tolerance; disagreeing cases are drawn here (their error is the finding), marked."""
    frame = runs.frame
    dtypes, ds = runs.dtypes(), sorted(frame["d"].unique())
    fig, axes = new_figure(
        len(dtypes) * len(ds),
        figure_title("Agreement with the float64 reference", runs, None),
        rows=len(dtypes),
        lines=legend_lines(runs),
    )
    for (dtype, d), ax in zip([(t, d) for t in dtypes for d in ds], axes, strict=True):
        panel = frame[(frame["dtype"] == dtype) & (frame["d"] == d)]
        for _, _, style, label, rows in series(runs, panel):
            _draw_errors(ax, rows, style, label)
        tolerance = panel.groupby("n")["tolerance"].min().dropna()
        ax.plot(
            tolerance.index,
            tolerance.to_numpy(),
            color="black",
            linestyle=(0, (4, 2)),
            label="tolerance",
        )
        ax.set_yscale("log")
        log2_axis(ax, frame["n"], n_label(frame))
        ax.set_ylabel("max |out − ref| / max|v| (relative)")
        ax.set_title(f"{dtype}, d = {d}", fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        unmeasured = panel[~panel["status"].isin(["ok", "disagrees"])]
        statuses = mark_unmeasured(ax, runs, unmeasured)
        legend(ax, runs, statuses - {"disagrees"}, _disagreement_handles(panel))
    return fig


def _draw_errors(ax, rows: pd.DataFrame, style: dict, label: str) -> None:
    """One line's errors against n (the checked cases), a red ring around each that disagrees."""
    checked = rows[rows["status"].isin(["ok", "disagrees"]) & (rows["max_rel_err"] > 0)]
    checked = checked[np.isfinite(checked["max_rel_err"])].sort_values("n")
    if checked.empty:
        return
    ax.plot(checked["n"], checked["max_rel_err"], label=label, **style)
    bad = checked[checked["status"] == "disagrees"]
    ax.plot(
        bad["n"],
        bad["max_rel_err"],
        linestyle="none",
        marker="o",
        markersize=14,
        markerfacecolor="none",
        markeredgecolor="red",
        markeredgewidth=1.5,
    )


def _disagreement_handles(panel: pd.DataFrame) -> list:
    """The red ring's legend entry, for a panel that has a disagreeing case."""
    from matplotlib.lines import Line2D

    if not (panel["status"] == "disagrees").any():
        return []
    return [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=10,
            markerfacecolor="none",
            markeredgecolor="red",
            label="disagrees: error above tolerance",
        )
    ]
