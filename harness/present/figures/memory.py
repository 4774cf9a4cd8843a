"""Peak extra memory of one call against n, beside the n×n score matrix's size."""

from __future__ import annotations

import pandas as pd

from harness.analysis.runs import Runs, fit_exponent, valid_rows
from harness.present.figures.panels import (
    STRIP_STEP,
    eng_y,
    legend,
    log2_axis,
    mark_unmeasured,
    missing_handle,
    n_label,
    n_words,
    per_d_panels,
    series,
)
from harness.results.schema import CUDA_TIMER


def memory_figure(runs: Runs, dtype: str):
    """Peak extra memory of one call against n, log-log, with its slope and the n×n scores."""
    fig, panels = per_d_panels(runs, dtype, f"Peak extra memory per call vs {n_words(runs.frame)}")
    for d, ax, frame in panels:
        missing, zero = [], []
        for _, _, style, label, rows in series(runs, frame):
            ok = valid_rows(rows, "peak_mem_bytes")
            zero.append((style, ok.loc[ok["peak_mem_bytes"] <= 0, "n"]))
            ok = ok[ok["peak_mem_bytes"] > 0]
            if ok.empty:
                missing.append(missing_handle(label, style))
                continue
            exponent = fit_exponent(ok["n"], ok["peak_mem_bytes"])
            slope = "" if exponent is None else rf"  $\propto n^{{{exponent:.2f}}}$"
            ax.plot(ok["n"], ok["peak_mem_bytes"], label=f"{label}{slope}", **style)
        _draw_score_matrix(ax, frame)
        zero = [(style, ns) for style, ns in zero if not ns.empty]
        _mark_no_growth(ax, zero, missing)
        ax.set_yscale("log")
        eng_y(ax, "B")
        log2_axis(ax, frame["n"], n_label(frame))
        gpu = (frame["timer"] == CUDA_TIMER).any()
        ax.set_ylabel(
            "peak extra resident memory (bytes)"
            + ("\nGPU rows: device memory, inputs included" if gpu else "")
        )
        ax.set_title(f"d = {d}  (slope 2: scores materialised; 1: fused)", fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        statuses = mark_unmeasured(ax, runs, frame, bottom_strips=len(zero))
        legend(ax, runs, statuses, missing)
    return fig


def _draw_score_matrix(ax, frame: pd.DataFrame) -> None:
    """The size of one head's n×n scores: what an implementation that materialises them adds."""
    scores = frame.groupby("n")["score_matrix_bytes"].max().dropna()
    ax.plot(
        scores.index,
        scores.to_numpy(),
        color="black",
        linestyle=(0, (4, 2)),
        linewidth=1.2,
        label="n×n score matrix (one head), for reference",
    )


def _mark_no_growth(ax, zero: list, missing: list) -> None:
    """The sizes where a line measured no growth (0 B), which a log axis cannot show: a row of
    open markers per line along the bottom, and their legend entry appended to `missing`."""
    from matplotlib.lines import Line2D

    for row, (style, ns) in enumerate(zero):
        ax.plot(
            ns,
            [0.035 + STRIP_STEP * row] * len(ns),
            linestyle="none",
            marker=style["marker"],
            markersize=6,
            markerfacecolor="none",
            color=style["color"],
            transform=ax.get_xaxis_transform(),
        )
    if zero:
        missing.append(
            Line2D(
                [],
                [],
                linestyle="none",
                marker="o",
                markerfacecolor="none",
                color="0.25",
                label="no growth measured (0 B), along the bottom",
            )
        )
