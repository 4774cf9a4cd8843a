"""The pieces every figure is made of: panels with room for their legends, log axes, one line per
implementation and machine, and markers for the cases that are not valid timings.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd

from harness.analysis.runs import Runs, decode_only, valid_rows
from harness.present.figures.style import impl_order, impl_style

FAR_SLOWER = 0.05  # a typical speedup below this is left out of the speedup figure, named
STATUS_MARKERS = {"skipped": "x", "failed": "X", "disagrees": r"$\neq$"}
STATUS_LEGEND = {
    "skipped": "skipped (over budget or unsupported)",
    "failed": "failed",
    "disagrees": "disagrees with the reference (not a timing)",
}
PANEL_SIZE_IN = (5.6, 3.6)  # plus room for the legend below each panel
LEGEND_LINE_IN = 0.2
STRIP_STEP = 0.045  # axes fraction between two rows of status markers


def new_figure(
    panels: int, title: str, rows: int = 1, lines: int = 0, width_in: float | None = None
):
    """A grid of panels, each tall enough for its legend below it (`lines` rows of legend)."""
    from matplotlib.figure import Figure

    cols = math.ceil(panels / rows)
    legend_in = LEGEND_LINE_IN * lines
    fig = Figure(
        figsize=(
            width_in or PANEL_SIZE_IN[0] * cols,
            (PANEL_SIZE_IN[1] + legend_in) * rows + 0.6,
        ),
        layout="constrained",
    )
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    fig.suptitle(textwrap.fill(title, int(fig.get_figwidth() * 13)), fontsize="medium")
    return fig, axes


def figure_title(what: str, runs: Runs, dtype: str | None) -> str:
    setting = _settings_text(runs.frame)
    head = f"{what} · {dtype}" if dtype else what
    return f"{head}{setting} · {runs.describe()}"


def _settings_text(frame: pd.DataFrame) -> str:
    """The workload and the mask, named only when they are not the plain one head, batch 1,
    n_q = n, non-causal."""
    parts = [w for w in sorted(frame["workload"].dropna().unique()) if w]
    if frame["causal"].astype(bool).any():
        parts.append("causal")
    return "".join(f" · {p}" for p in parts)


def log2_axis(ax, values, label: str) -> None:
    from matplotlib.ticker import NullLocator

    ticks = sorted(set(int(v) for v in values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)


def label_narrow_log_y(ax, formatter) -> None:
    """Under a decade and a half of range, label the 2x and 5x ticks too (more under a decade):
    else a log axis shows one label or none. Call it once the data are drawn."""
    from matplotlib.ticker import LogLocator

    low, high = ax.get_ylim()
    span = high / low
    if span >= 30:
        return
    if span >= 10:
        subs = (2.0, 5.0)
    elif span >= 3:
        subs = (2.0, 3.0, 5.0)
    else:
        subs = tuple(float(i) for i in range(2, 10))
    ax.yaxis.set_minor_locator(LogLocator(subs=subs))
    ax.yaxis.set_minor_formatter(formatter)


def eng_y(ax, unit: str) -> None:
    from matplotlib.ticker import EngFormatter, NullFormatter

    ax.yaxis.set_major_formatter(EngFormatter(unit=unit))
    ax.yaxis.set_minor_formatter(NullFormatter())


def n_words(frame: pd.DataFrame) -> str:
    return "KV cache length" if decode_only(frame) else "sequence length"


def n_label(frame: pd.DataFrame) -> str:
    """What n is on an axis: the sequence, or (a fixed query length: decode) the KV cache."""
    if decode_only(frame):
        fixed = ", ".join(str(v) for v in sorted(frame["n_q"].unique()))
        return f"keys n (the KV cache), against {fixed} quer{'y' if fixed == '1' else 'ies'}"
    return "sequence length n (tokens)"


def series(runs: Runs, frame: pd.DataFrame):
    """(impl, machine, style, label, that series' rows) for each line of a panel."""
    for machine in runs.metas:
        for impl in impl_order(frame):
            rows = frame[(frame["impl"] == impl) & (frame["machine"] == machine)]
            if rows.empty:
                continue
            style = {**impl_style(impl), "linestyle": runs.linestyle(machine)}
            yield impl, machine, style, runs.label(impl, machine), rows


def valid_series(runs: Runs, frame: pd.DataFrame, missing: list):
    """(style, label, valid rows) of each line of a panel that has valid rows; a line without
    any gets its legend entry appended to `missing` instead."""
    for _, _, style, label, rows in series(runs, frame):
        ok = valid_rows(rows)
        if ok.empty:
            missing.append(missing_handle(label, style))
            continue
        yield style, label, ok


def note_far(ax, why: str, far: list[str]) -> None:
    """Name, in the panel's corner, the lines left out for being far off the others."""
    if far:
        text = f"{why}: " + "; ".join(far)
        ax.text(
            0.98, 0.02, text, transform=ax.transAxes, ha="right", fontsize="x-small", color="0.3"
        )


def mark_unmeasured(
    ax, runs: Runs, frame: pd.DataFrame, x: str = "n", bottom_strips: int = 0
) -> set[str]:
    """Markers along the top of the panel for every case that is not a valid measurement.

    One row of markers per line that has such cases, in its colour, in a strip kept free above
    the data; the log y axis is stretched so that this strip (and `bottom_strips` rows drawn
    along the bottom by the caller) clear the data. Returns the statuses drawn, for the legend.
    """
    drawn, strips = set(), 0
    for _, _, style, label, rows in series(runs, frame):
        unmeasured = rows[rows["status"].isin(list(STATUS_MARKERS))]
        if unmeasured.empty:
            continue
        for status, marker in STATUS_MARKERS.items():
            xs = unmeasured.loc[unmeasured["status"] == status, x]
            if not xs.empty:
                drawn.add(status)
                ax.plot(
                    xs,
                    [1 - 0.035 - STRIP_STEP * strips] * len(xs),
                    linestyle="none",
                    marker=marker,
                    color=style["color"],
                    markersize=8,
                    transform=ax.get_xaxis_transform(),
                    clip_on=False,
                )
        ax.text(  # whose markers these are, in its colour, at the strip's right end
            1.005,
            1 - 0.035 - STRIP_STEP * strips,
            label,
            color=style["color"],
            fontsize="x-small",
            va="center",
            transform=ax.transAxes,
            clip_on=False,
        )
        strips += 1
    if strips or bottom_strips:
        top = 0.03 + STRIP_STEP * strips if strips else 0.0
        bottom = 0.03 + STRIP_STEP * bottom_strips if bottom_strips else 0.0
        low, high = np.log(ax.get_ylim())
        span = (high - low) / (1 - top - bottom)
        ax.set_ylim(math.exp(low - bottom * span), math.exp(high + top * span))
    return drawn


def _legend_columns(runs: Runs) -> int:
    return 1 if runs.several else 2  # "impl @ machine" labels are too long for two columns


def legend_lines(runs: Runs) -> int:
    """Rows a panel's legend takes: a line per series and up to three references/markers."""
    entries = runs.frame.groupby(["machine", "impl"]).ngroups + 3
    return math.ceil(entries / _legend_columns(runs))


def legend(ax, runs: Runs, statuses: set[str], extra_handles=()) -> None:
    from matplotlib.lines import Line2D

    handles, labels = ax.get_legend_handles_labels()
    for handle in extra_handles:
        handles.append(handle)
        labels.append(handle.get_label())
    for status in STATUS_MARKERS:
        if status in statuses:
            handles.append(
                Line2D([], [], color="0.25", marker=STATUS_MARKERS[status], linestyle="none")
            )
            labels.append(STATUS_LEGEND[status])
    if handles:
        ax.legend(
            handles,
            labels,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.16),
            ncol=_legend_columns(runs),
            fontsize="small",
            frameon=False,
        )


def missing_handle(label: str, style: dict):
    """A legend entry for a line that has no valid point, so that it is not silently absent."""
    from matplotlib.lines import Line2D

    return Line2D(
        [],
        [],
        color=style["color"],
        marker=style["marker"],
        linestyle="none",
        label=f"{label}: no valid timing",
    )


def per_d_panels(runs: Runs, dtype: str, what: str):
    frame = runs.frame[runs.frame["dtype"] == dtype]
    ds = sorted(frame["d"].unique())
    fig, axes = new_figure(len(ds), figure_title(what, runs, dtype), lines=legend_lines(runs))
    for ax in axes[len(ds) :]:
        ax.set_visible(False)
    return fig, [(d, ax, frame[frame["d"] == d]) for d, ax in zip(ds, axes, strict=True)]


def finish_rate_panel(ax, runs: Runs, frame: pd.DataFrame, d: int, missing, ylabel: str):
    """A rate against n: log axes with plain numbers, the unmeasured cases, the legend."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(NullFormatter())
    log2_axis(ax, frame["n"], n_label(frame))
    ax.set_ylabel(ylabel)
    ax.set_title(f"d = {d}", fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    statuses = mark_unmeasured(ax, runs, frame)
    label_narrow_log_y(ax, plain)
    legend(ax, runs, statuses, missing)
