"""Run B against run A: B's times against A's, and B/A against n with its intervals."""

from __future__ import annotations

import numpy as np
import pandas as pd

from harness.analysis.compare import FASTER, SLOWER
from harness.present.figures.style import impl_order, impl_style

RINGS = {SLOWER: "red", FASTER: "green"}  # around the cases marked, on both panels


def compare_figure(table: pd.DataFrame, threshold: float, name_a: str, name_b: str):
    """B against A (log-log, with the y = x line and the threshold band) and B/A against n."""
    from matplotlib.figure import Figure

    ok = table[(table["status_a"] == "ok") & (table["status_b"] == "ok")]
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    scatter, ratios = fig.subplots(1, 2)
    fig.suptitle(
        f"Run B ({name_b}) against run A ({name_a}): median time per call, "
        f"threshold ±{threshold:.1%}",
        fontsize="medium",
    )
    for impl in impl_order(ok):
        _draw_cases(scatter, ratios, ok[ok["impl"] == impl], impl)
    if not ok.empty:
        _draw_bounds(scatter, ratios, ok, threshold)
    _label_scatter(scatter, name_a, name_b)
    _label_ratios(ratios, threshold)
    for ax in (scatter, ratios):
        _legend(ax)
    return fig


def _draw_cases(scatter, ratios, rows: pd.DataFrame, impl: str) -> None:
    """One implementation's cases: B against A, B/A against n with its interval, and a ring
    around each case marked slower or faster."""
    style = impl_style(impl)
    ratios.errorbar(
        rows["n"],
        rows["ratio"],
        yerr=[rows["ratio"] - rows["ratio_low"], rows["ratio_high"] - rows["ratio"]],
        linestyle="none",
        color=style.get("color"),
        alpha=0.6,
    )
    for ax, x, y in ((scatter, "median_a_s", "median_b_s"), (ratios, "n", "ratio")):
        ax.plot(rows[x], rows[y], linestyle="none", label=impl, alpha=0.8, **style)
        for change, color in RINGS.items():
            hit = rows[rows["change"] == change]
            ax.plot(
                hit[x],
                hit[y],
                linestyle="none",
                marker="o",
                markersize=13,
                markerfacecolor="none",
                markeredgecolor=color,
                markeredgewidth=1.5,
            )


def _draw_bounds(scatter, ratios, ok: pd.DataFrame, threshold: float) -> None:
    """The line B = A and the threshold's band around it, over the times measured; the sizes
    measured as the ratios' ticks."""
    from matplotlib.ticker import NullLocator

    low = min(ok["median_a_s"].min(), ok["median_b_s"].min()) / 2
    high = max(ok["median_a_s"].max(), ok["median_b_s"].max()) * 2
    line = np.array([low, high])
    scatter.plot(line, line, color="black", linewidth=1, label="B = A")
    scatter.fill_between(
        line,
        line / (1 + threshold),
        line * (1 + threshold),
        color="0.85",
        label=f"within ±{threshold:.1%}",
    )
    scatter.set_xlim(low, high)
    scatter.set_ylim(low, high)
    ticks = sorted(set(ok["n"]))
    ratios.set_xscale("log", base=2)
    ratios.set_xticks(ticks, [str(t) for t in ticks])
    ratios.xaxis.set_minor_locator(NullLocator())


def _label_scatter(scatter, name_a: str, name_b: str) -> None:
    from matplotlib.ticker import EngFormatter, NullFormatter

    scatter.set_xscale("log")
    scatter.set_yscale("log")
    for axis in (scatter.xaxis, scatter.yaxis):
        axis.set_major_formatter(EngFormatter(unit="s"))
        axis.set_minor_formatter(NullFormatter())
    scatter.set_xlabel(f"A: {name_a}, time per call (s)")
    scatter.set_ylabel(f"B: {name_b}, time per call (s)")
    scatter.set_aspect("equal")


def _label_ratios(ratios, threshold: float) -> None:
    """B/A on a log axis with the threshold's band around 1."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ratios.axhspan(1 / (1 + threshold), 1 + threshold, color="0.85")
    ratios.axhline(1, color="black", linewidth=1)
    ratios.set_yscale("log")
    low, high = ratios.get_ylim()
    ratios.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    # minor ticks labelled only when the axis spans less than a decade (else they pile up)
    minor = FuncFormatter(lambda v, _: f"{v:g}×") if high / low < 10 else NullFormatter()
    ratios.yaxis.set_minor_formatter(minor)
    ratios.set_xlabel("sequence length n (tokens)")
    ratios.set_ylabel("B / A as judged, 95% interval (×; above 1 is slower)")
    ratios.set_title(
        "of the ratio to the baseline where both runs have it, else of the drift-normalised time",
        fontsize="small",
    )


def _legend(ax) -> None:
    """The panel's own entries, then what the rings mean."""
    from matplotlib.lines import Line2D

    rings = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=10,
            markerfacecolor="none",
            markeredgecolor=color,
            label=f"{change} (whole interval beyond the threshold)",
        )
        for change, color in RINGS.items()
    ]
    ax.grid(True, which="major", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles + rings, labels + [h.get_label() for h in rings], fontsize="small")
