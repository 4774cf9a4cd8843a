"""Figures of one or several run directories: who wins where, how each scales, how near the peak.

Each `*_figure` function builds a matplotlib Figure from data and writes nothing (testable);
`save_figure` writes one as PNG (to look at) and SVG (for papers). Figures are made with
matplotlib.figure.Figure, never pyplot: no global state, no backend chosen, at import or after.

Only `ok` cases are drawn as measurements. Skipped, failed and disagreeing cases are drawn as
markers along the top of each panel in their implementation's colour, so none goes missing
silently and a disagreeing timing is never read as a valid one.
"""

from __future__ import annotations

import math
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from harness.ratios import default_baseline, paired_ratios
from harness.results.schema import CUDA_TIMER
from harness.runs import (
    FIT_POINTS,
    NotInRunError,
    Runs,
    band_s,
    by_mask,
    decode_only,
    fit_exponent,
    format_seconds,
    load_runs,
    valid_rows,
)

# One style per implementation, the same in every figure and every run: known names are fixed,
# others get a colour and marker from a hash of the name (stable across runs and processes).
KNOWN_STYLES = {
    "naive": ("#7f7f7f", "s"),
    "numpy": ("#1f77b4", "o"),
    "numba_parallel": ("#ff7f0e", "^"),
    "numba_cuda": ("#2ca02c", "D"),
    "torch_sdpa": ("#d62728", "v"),
}
FALLBACK_COLORS = ("#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#393b79", "#637939")
FALLBACK_MARKERS = ("P", "*", "h", "<", ">", "p", "d")
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
SOURCE_WORDS = {"none": "no JIT", "disk cache": "from disk cache", "compiled": "compiled"}


def impl_style(name: str) -> dict:
    """Colour and marker of an implementation, fixed for known names, hashed for others."""
    if name in KNOWN_STYLES:
        color, marker = KNOWN_STYLES[name]
    else:
        key = zlib.crc32(name.encode())
        color = FALLBACK_COLORS[key % len(FALLBACK_COLORS)]
        marker = FALLBACK_MARKERS[(key // len(FALLBACK_COLORS)) % len(FALLBACK_MARKERS)]
    return {"color": color, "marker": marker}


# --------------------------------------------------------------------------- figure pieces


def _new_figure(
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


def _title(what: str, runs: Runs, dtype: str | None) -> str:
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


def _log2_axis(ax, values, label: str) -> None:
    from matplotlib.ticker import NullLocator

    ticks = sorted(set(int(v) for v in values))
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlabel(label)


def _label_narrow_log_y(ax, formatter) -> None:
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


def _eng_y(ax, unit: str) -> None:
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


def impl_order(frame: pd.DataFrame) -> list[str]:
    """Implementations in a stable order: known names first, in the style table's order."""
    names = list(frame["impl"].unique())
    known = [n for n in KNOWN_STYLES if n in names]
    return known + sorted(n for n in names if n not in KNOWN_STYLES)


def _series(runs: Runs, frame: pd.DataFrame):
    """(impl, machine, style, label, that series' rows) for each line of a panel."""
    for machine in runs.metas:
        for impl in impl_order(frame):
            rows = frame[(frame["impl"] == impl) & (frame["machine"] == machine)]
            if rows.empty:
                continue
            style = {**impl_style(impl), "linestyle": runs.linestyle(machine)}
            yield impl, machine, style, runs.label(impl, machine), rows


def _valid_series(runs: Runs, frame: pd.DataFrame, missing: list):
    """(style, label, valid rows) of each line of a panel that has valid rows; a line without
    any gets its legend entry appended to `missing` instead."""
    for _, _, style, label, rows in _series(runs, frame):
        ok = valid_rows(rows)
        if ok.empty:
            missing.append(_missing_handle(label, style))
            continue
        yield style, label, ok


def _note_far(ax, why: str, far: list[str]) -> None:
    """Name, in the panel's corner, the lines left out for being far off the others."""
    if far:
        text = f"{why}: " + "; ".join(far)
        ax.text(
            0.98, 0.02, text, transform=ax.transAxes, ha="right", fontsize="x-small", color="0.3"
        )


def _mark_unmeasured(
    ax, runs: Runs, frame: pd.DataFrame, x: str = "n", bottom_strips: int = 0
) -> set[str]:
    """Markers along the top of the panel for every case that is not a valid measurement.

    One row of markers per line that has such cases, in its colour, in a strip kept free above
    the data; the log y axis is stretched so that this strip (and `bottom_strips` rows drawn
    along the bottom by the caller) clear the data. Returns the statuses drawn, for the legend.
    """
    drawn, strips = set(), 0
    for _, _, style, label, rows in _series(runs, frame):
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


def _legend_lines(runs: Runs) -> int:
    """Rows a panel's legend takes: a line per series and up to three references/markers."""
    entries = runs.frame.groupby(["machine", "impl"]).ngroups + 3
    return math.ceil(entries / _legend_columns(runs))


def _legend(ax, runs: Runs, statuses: set[str], extra_handles=()) -> None:
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


def _missing_handle(label: str, style: dict):
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


def _per_d_panels(runs: Runs, dtype: str, what: str):
    frame = runs.frame[runs.frame["dtype"] == dtype]
    ds = sorted(frame["d"].unique())
    fig, axes = _new_figure(len(ds), _title(what, runs, dtype), lines=_legend_lines(runs))
    for ax in axes[len(ds) :]:
        ax.set_visible(False)
    return fig, [(d, ax, frame[frame["d"] == d]) for d, ax in zip(ds, axes, strict=True)]


# --------------------------------------------------------------------------- figures


def time_vs_n_figure(runs: Runs, dtype: str):
    """Median time per call against n, log-log, its interval as a band, fitted exponent in
    each label."""
    fig, panels = _per_d_panels(runs, dtype, f"Time per call vs {n_words(runs.frame)}")
    for d, ax, frame in panels:
        missing = []
        for style, label, ok in _valid_series(runs, frame, missing):
            exponent = fit_exponent(ok["n"], ok["median_s"])
            slope = "" if exponent is None else rf"  $\propto n^{{{exponent:.2f}}}$"
            ax.plot(ok["n"], ok["median_s"], label=f"{label}{slope}", **style)
            low, high = zip(*(band_s(row) for _, row in ok.iterrows()), strict=True)
            ax.fill_between(ok["n"], low, high, color=style["color"], alpha=0.2, linewidth=0)
        ax.set_yscale("log")
        _eng_y(ax, "s")
        _log2_axis(ax, frame["n"], n_label(frame))
        ax.set_ylabel("time per call (s), median and 95% interval")
        ax.set_title(f"d = {d}  (slope fitted over the {FIT_POINTS} largest n)", fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        statuses = _mark_unmeasured(ax, runs, frame)
        _legend(ax, runs, statuses, missing)
    return fig


def throughput_figure(runs: Runs, dtype: str):
    """GFLOP/s against n, with each machine's measured CPU matrix-product peak as a ceiling:
    the start-of-run peak as a line, the peaks measured alongside large shapes as dashes."""
    fig, panels = _per_d_panels(runs, dtype, f"Throughput vs {n_words(runs.frame)}")
    for d, ax, frame in panels:
        missing, far, lines = [], [], []
        for style, label, ok in _valid_series(runs, frame, missing):
            lines.append((style, label, ok, ok["flops"] / ok["median_s"] / 1e9))
        best = max((float(np.median(rate)) for *_, rate in lines), default=0.0)
        for style, label, ok, rate in lines:
            if float(np.median(rate)) < FAR_SLOWER * best:  # it would squeeze the others
                far.append(f"{label}: {float(np.median(rate)):.2g} GFLOP/s (left out)")
                continue
            ax.plot(ok["n"], rate, label=label, **style)
        _note_far(ax, f"over {1 / FAR_SLOWER:g}× below the fastest", far)
        for machine, meta in runs.metas.items():
            peak = meta.get("gemm_peak_gflops", {}).get(dtype)
            rows = frame[frame["machine"] == machine]
            if peak and (rows["timer"] != CUDA_TIMER).any():  # the peak is the CPU's
                where = f" @ {machine}" if runs.several else ""
                ax.axhline(
                    peak,
                    color="black",
                    linestyle=runs.linestyle(machine),
                    linewidth=1.2,
                    label=f"CPU matrix-product peak{where}: {peak:.3g} GFLOP/s (at the start)",
                )
                alongside = rows.dropna(subset=["gemm_gflops"])
                alongside = alongside[alongside["gemm_gflops"] != peak].drop_duplicates(
                    ["n", "workload", "causal", "gemm_gflops"]
                )
                if not alongside.empty:
                    ax.plot(
                        alongside["n"],
                        alongside["gemm_gflops"],
                        linestyle="none",
                        marker="_",
                        markersize=14,
                        markeredgewidth=2.5,
                        color="black",
                        label=f"matrix-product peak measured during this n{where}",
                    )
        counted = "4·n²·d" if (frame["n_q"] == frame["n"]).all() else "4·n_q·n·d"
        if frame["causal"].astype(bool).all():
            counted = "2·n²·d (causal)" if counted == "4·n²·d" else "4·d per visible pair"
        _finish_rate_panel(ax, runs, frame, d, missing,
                           f"throughput (GFLOP/s), {counted} FLOPs per head")  # fmt: skip
    return fig


def _finish_rate_panel(ax, runs: Runs, frame: pd.DataFrame, d: int, missing, ylabel: str):
    """A rate against n: log axes with plain numbers, the unmeasured cases, the legend."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(NullFormatter())
    _log2_axis(ax, frame["n"], n_label(frame))
    ax.set_ylabel(ylabel)
    ax.set_title(f"d = {d}", fontsize="small")
    ax.grid(True, which="major", alpha=0.3)
    statuses = _mark_unmeasured(ax, runs, frame)
    _label_narrow_log_y(ax, plain)
    _legend(ax, runs, statuses, missing)


def bandwidth_figure(runs: Runs, dtype: str):
    """GB/s against n (q, K and V once per key/value head read, the output written), with the
    rate of a streaming read of as many bytes by the same threads, measured before each of the
    shape's rounds in the same cache state: the ceiling of a memory-bound case."""
    fig, panels = _per_d_panels(runs, dtype, f"Bytes moved per second vs {n_words(runs.frame)}")
    for d, ax, frame in panels:
        missing = []
        for style, label, ok in _valid_series(runs, frame, missing):
            ax.plot(ok["n"], ok["bytes"] / ok["median_s"] / 1e9, label=label, **style)
        for machine in runs.metas:
            reads = frame[frame["machine"] == machine].dropna(subset=["bandwidth_gbps"])
            reads = reads.groupby("n")["bandwidth_gbps"].median()
            if reads.empty:
                continue
            where = f" @ {machine}" if runs.several else ""
            ax.plot(
                reads.index,
                reads.to_numpy(),
                color="black",
                linestyle=runs.linestyle(machine),
                marker="_",
                markersize=12,
                linewidth=1.2,
                label=f"streaming read of the same bytes{where}",
            )
        _finish_rate_panel(ax, runs, frame, d, missing, "GB/s: q, K, V read once, output written")
    return fig


def speedup_figure(runs: Runs, dtype: str, baseline: str):
    """Time of the baseline divided by each implementation's time, on the same machine."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    fig, panels = _per_d_panels(runs, dtype, f"Speedup over {baseline} (95% intervals)")
    for d, ax, frame in panels:
        missing, far = [], []
        ratios = paired_ratios(frame, baseline)
        for impl, machine, style, label, rows in _series(runs, frame):
            base = valid_rows(frame[(frame["impl"] == baseline) & (frame["machine"] == machine)])
            merged = valid_rows(rows).merge(base[["n", "median_s"]], on="n", suffixes=("", "_base"))
            if merged.empty:
                missing.append(_missing_handle(label, style))
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
        _note_far(ax, f"over {1 / FAR_SLOWER:g}× slower than {baseline}", far)
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
        _log2_axis(ax, frame["n"], n_label(frame))
        ax.set_ylabel(f"speedup over {baseline} (×, time ratio; >1 is faster)")
        ax.set_title(f"d = {d}", fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        statuses = _mark_unmeasured(ax, runs, frame)
        _label_narrow_log_y(ax, FuncFormatter(lambda value, _: f"{value:g}×"))
        _legend(ax, runs, statuses, missing)
    return fig


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
    title = _title(f"Time per call vs head dimension at n = {n}", runs, dtype)
    fig, axes = _new_figure(1, title, lines=_legend_lines(runs))
    ax = axes[0]
    missing = []
    for style, label, ok in _valid_series(runs, frame, missing):
        ok = ok.sort_values("d")
        exponent = fit_exponent(ok["d"], ok["median_s"], points=len(ok))
        slope = "" if exponent is None else rf"  $\propto d^{{{exponent:.2f}}}$"
        ax.plot(ok["d"], ok["median_s"], label=f"{label}{slope}", **style)
    ax.set_yscale("log")
    _eng_y(ax, "s")
    _log2_axis(ax, runs.frame.loc[runs.frame["dtype"] == dtype, "d"], "head dimension d")
    ax.set_ylabel("time per call (s), median")
    ax.grid(True, which="major", alpha=0.3)
    statuses = _mark_unmeasured(ax, runs, frame, x="d")
    _label_narrow_log_y(ax, EngFormatter(unit="s"))
    _legend(ax, runs, statuses, missing)
    return fig


def memory_figure(runs: Runs, dtype: str):
    """Peak extra memory of one call against n, log-log, with its slope and the n×n scores."""
    from matplotlib.lines import Line2D

    fig, panels = _per_d_panels(runs, dtype, f"Peak extra memory per call vs {n_words(runs.frame)}")
    for d, ax, frame in panels:
        missing, zero = [], []
        for _, _, style, label, rows in _series(runs, frame):
            ok = valid_rows(rows, "peak_mem_bytes")
            zero.append((style, ok.loc[ok["peak_mem_bytes"] <= 0, "n"]))
            ok = ok[ok["peak_mem_bytes"] > 0]
            if ok.empty:
                missing.append(_missing_handle(label, style))
                continue
            exponent = fit_exponent(ok["n"], ok["peak_mem_bytes"])
            slope = "" if exponent is None else rf"  $\propto n^{{{exponent:.2f}}}$"
            ax.plot(ok["n"], ok["peak_mem_bytes"], label=f"{label}{slope}", **style)
        scores = frame.groupby("n")["score_matrix_bytes"].max().dropna()
        ax.plot(
            scores.index,
            scores.to_numpy(),
            color="black",
            linestyle=(0, (4, 2)),
            linewidth=1.2,
            label="n×n score matrix (one head), for reference",
        )
        zero = [(style, ns) for style, ns in zero if not ns.empty]
        for row, (style, ns) in enumerate(zero):  # a log axis cannot show 0 B: along the bottom
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
        ax.set_yscale("log")
        _eng_y(ax, "B")
        _log2_axis(ax, frame["n"], n_label(frame))
        gpu = (frame["timer"] == CUDA_TIMER).any()
        ax.set_ylabel(
            "peak extra resident memory (bytes)"
            + ("\nGPU rows: device memory, inputs included" if gpu else "")
        )
        ax.set_title(f"d = {d}  (slope 2: scores materialised; 1: fused)", fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        statuses = _mark_unmeasured(ax, runs, frame, bottom_strips=len(zero))
        _legend(ax, runs, statuses, missing)
    return fig


def agreement_figure(runs: Runs):
    """Largest error relative to max|v| against n, per dtype (rows) and d (columns), with the
    tolerance; disagreeing cases are drawn here (their error is the finding), marked."""
    from matplotlib.lines import Line2D

    frame = runs.frame
    dtypes, ds = runs.dtypes(), sorted(frame["d"].unique())
    fig, axes = _new_figure(
        len(dtypes) * len(ds),
        _title("Agreement with the float64 reference", runs, None),
        rows=len(dtypes),
        lines=_legend_lines(runs),
    )
    for (dtype, d), ax in zip([(t, d) for t in dtypes for d in ds], axes, strict=True):
        panel = frame[(frame["dtype"] == dtype) & (frame["d"] == d)]
        for _, _, style, label, rows in _series(runs, panel):
            checked = rows[rows["status"].isin(["ok", "disagrees"]) & (rows["max_rel_err"] > 0)]
            checked = checked[np.isfinite(checked["max_rel_err"])].sort_values("n")
            if checked.empty:
                continue
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
        tolerance = panel.groupby("n")["tolerance"].min().dropna()
        ax.plot(
            tolerance.index,
            tolerance.to_numpy(),
            color="black",
            linestyle=(0, (4, 2)),
            label="tolerance",
        )
        ax.set_yscale("log")
        _log2_axis(ax, frame["n"], n_label(frame))
        ax.set_ylabel("max |out − ref| / max|v| (relative)")
        ax.set_title(f"{dtype}, d = {d}", fontsize="small")
        ax.grid(True, which="major", alpha=0.3)
        unmeasured = panel[~panel["status"].isin(["ok", "disagrees"])]
        statuses = _mark_unmeasured(ax, runs, unmeasured)
        extra = []
        if (panel["status"] == "disagrees").any():
            extra.append(
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
            )
        _legend(ax, runs, statuses - {"disagrees"}, extra)
    return fig


def first_compiles(frame: pd.DataFrame) -> pd.DataFrame:
    """Per machine, impl and dtype: the compile time of the first measured case (where a JIT
    compiles or loads its cache) and where the code came from."""
    measured = frame[frame["compile_s"].notna()]
    first = measured.groupby(["machine", "impl", "dtype"], sort=False).head(1)
    return first[["machine", "impl", "dtype", "n", "d", "compile_s", "compile_source"]]


def compile_figure(runs: Runs):
    """Compile (first-call overhead) time per implementation and dtype, labelled with its source."""
    from matplotlib.patches import Patch

    first = first_compiles(runs.frame)
    dtypes = runs.dtypes()
    groups = [
        (m, i)
        for m in runs.metas
        for i in impl_order(runs.frame)
        if ((runs.frame["machine"] == m) & (runs.frame["impl"] == i)).any()
    ]
    fig, axes = _new_figure(
        1,
        _title("Compile time: first call minus a warm call", runs, None),
        lines=4,
        width_in=max(PANEL_SIZE_IN[0], 0.8 * len(groups) * len(dtypes) + 1.5),
    )
    ax = axes[0]
    width = 0.8 / len(dtypes)
    hatches = ("", "//", "..", "xx")
    floor = 1e-6  # seconds: below the resolution that matters for a compile
    for g, (machine, impl) in enumerate(groups):
        for k, dtype in enumerate(dtypes):
            x = g - 0.4 + width * (k + 0.5)
            row = first[
                (first["machine"] == machine) & (first["impl"] == impl) & (first["dtype"] == dtype)
            ]
            if row.empty:
                ax.text(
                    x,
                    floor,
                    " no valid case",
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize="x-small",
                    color="0.3",
                )
                continue
            seconds, source = float(row["compile_s"].iloc[0]), row["compile_source"].iloc[0]
            ax.bar(
                x,
                max(seconds, floor) - floor,
                width,
                bottom=floor,
                color=impl_style(impl)["color"],
                hatch=hatches[k % len(hatches)],
                edgecolor="white",
            )
            ax.text(
                x,
                max(seconds, floor) * 1.15,
                f"{format_seconds(seconds)}\n{SOURCE_WORDS.get(source, source)}",
                ha="center",
                va="bottom",
                fontsize="x-small",
            )
    ax.set_yscale("log")
    _eng_y(ax, "s")
    ax.set_ylim(floor, max(1.0, first["compile_s"].max() * 30 if not first.empty else 1.0))
    ax.set_xticks(
        range(len(groups)),
        [runs.label(i, m).replace(" @ ", "\n@ ") for m, i in groups],
        rotation=20,
        ha="right",  # long names side by side would run into each other
        rotation_mode="anchor",
    )
    ax.set_ylabel("compile time (s): first call − median call")
    ax.set_xlabel("implementation (bar label: seconds and where the code came from)")
    ax.grid(True, axis="y", which="major", alpha=0.3)
    ax.legend(
        handles=[
            Patch(facecolor="0.6", hatch=hatches[k % len(hatches)], edgecolor="white", label=dtype)
            for k, dtype in enumerate(dtypes)
        ],
        title="dtype",
        fontsize="small",
        loc="upper right",
    )
    return fig


# --------------------------------------------------------------------------- all of them


def figures(runs: Runs, baseline: str | None = None, n_fixed: int | None = None):
    """Every figure, by file name stem, and notes on figures not drawn (with why)."""
    known = set(runs.frame["impl"])
    if baseline is not None and baseline not in known:
        raise NotInRunError(
            "baseline", f"{baseline!r} is not in the run; choose one of {', '.join(sorted(known))}"
        )
    if n_fixed is not None and n_fixed not in set(runs.frame["n"]):
        raise NotInRunError(
            "n_fixed",
            f"{n_fixed} was not measured; choose one of "
            f"{', '.join(str(n) for n in sorted(set(runs.frame['n'])))}",
        )
    baseline = baseline or default_baseline(runs.frame, runs.metas)
    built, notes = {}, []
    for suffix, part in by_mask(runs):
        for dtype in part.dtypes():
            stem = f"{dtype}{suffix}"
            built[f"time_vs_n_{stem}"] = time_vs_n_figure(part, dtype)
            built[f"throughput_{stem}"] = throughput_figure(part, dtype)
            rows = part.frame[part.frame["dtype"] == dtype]
            if "bound" in rows and rows["bound"].eq("memory").any():
                built[f"bandwidth_{stem}"] = bandwidth_figure(part, dtype)
            if baseline in known:
                built[f"speedup_{stem}"] = speedup_figure(part, dtype, baseline)
            if part.frame.loc[part.frame["dtype"] == dtype, "d"].nunique() > 1:
                built[f"time_vs_d_{stem}"] = time_vs_d_figure(part, dtype, n_fixed)
            else:
                notes.append(f"no time-vs-d figure for {dtype}{suffix}: the run has one d")
            built[f"memory_{stem}"] = memory_figure(part, dtype)
        built[f"agreement{suffix}"] = agreement_figure(part)
        built[f"compile_time{suffix}"] = compile_figure(part)
    if baseline not in known:
        notes.append(
            f"no speedup plot: the default baseline {baseline} is not in the run; "
            f"choose one with --baseline ({', '.join(sorted(known))})"
        )
    return built, notes


def save_figure(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """Write `stem`.png (to look at) and `stem`.svg (for papers) into out_dir."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / f"{stem}.png", out / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=110)
    fig.set_layout_engine("none")  # laid out by the first save; the layout does not change
    fig.savefig(paths[1])
    return paths


def plot_runs(
    paths: list[str | Path],
    out_dir: str | Path | None = None,
    baseline: str | None = None,
    n_fixed: int | None = None,
) -> tuple[list[Path], list[str]]:
    """Draw and save every figure of the runs (into the first run directory by default)."""
    runs = load_runs(paths)
    built, notes = figures(runs, baseline, n_fixed)
    out = Path(out_dir) if out_dir is not None else Path(paths[0])
    written = [path for stem, fig in built.items() for path in save_figure(fig, out, stem)]
    return written, notes
