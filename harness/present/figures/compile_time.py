"""Compile time (the first call minus a warm one), and where the code came from."""

from __future__ import annotations

import pandas as pd

from harness.analysis.runs import Runs, format_seconds
from harness.present.figures.panels import (
    PANEL_SIZE_IN,
    eng_y,
    figure_title,
    new_figure,
)
from harness.present.figures.style import impl_order, impl_style

SOURCE_WORDS = {"none": "no JIT", "disk cache": "from disk cache", "compiled": "compiled"}
HATCHES = ("", "//", "..", "xx")  # a hatch per dtype
FLOOR_S = 1e-6  # seconds: below the resolution that matters for a compile


def first_compiles(frame: pd.DataFrame) -> pd.DataFrame:
    """Per machine, impl and dtype: the compile time of the first measured case (where a JIT
    compiles or loads its cache) and where the code came from."""
    measured = frame[frame["compile_s"].notna()]
    first = measured.groupby(["machine", "impl", "dtype"], sort=False).head(1)
    return first[["machine", "impl", "dtype", "n", "d", "compile_s", "compile_source"]]


def compile_figure(runs: Runs):
    """Compile (first-call overhead) time per implementation and dtype, labelled with its source."""
    first = first_compiles(runs.frame)
    dtypes = runs.dtypes()
    groups = [
        (m, i)
        for m in runs.metas
        for i in impl_order(runs.frame)
        if ((runs.frame["machine"] == m) & (runs.frame["impl"] == i)).any()
    ]
    fig, axes = new_figure(
        1,
        figure_title("Compile time: first call minus a warm call", runs, None),
        lines=4,
        width_in=max(PANEL_SIZE_IN[0], 0.8 * len(groups) * len(dtypes) + 1.5),
    )
    ax = axes[0]
    width = 0.8 / len(dtypes)
    for g, (machine, impl) in enumerate(groups):
        for k, dtype in enumerate(dtypes):
            row = first[
                (first["machine"] == machine) & (first["impl"] == impl) & (first["dtype"] == dtype)
            ]
            _draw_bar(ax, g - 0.4 + width * (k + 0.5), width, row, impl, HATCHES[k % len(HATCHES)])
    _label_axes(ax, runs, groups, dtypes, first)
    return fig


def _draw_bar(ax, x: float, width: float, row: pd.DataFrame, impl: str, hatch: str) -> None:
    """One implementation's compile time in one dtype, labelled with its seconds and where the
    code came from; where it has no valid case, a note saying so."""
    if row.empty:
        ax.text(
            x,
            FLOOR_S,
            " no valid case",
            rotation=90,
            ha="center",
            va="bottom",
            fontsize="x-small",
            color="0.3",
        )
        return
    seconds, source = float(row["compile_s"].iloc[0]), row["compile_source"].iloc[0]
    ax.bar(
        x,
        max(seconds, FLOOR_S) - FLOOR_S,
        width,
        bottom=FLOOR_S,
        color=impl_style(impl)["color"],
        hatch=hatch,
        edgecolor="white",
    )
    ax.text(
        x,
        max(seconds, FLOOR_S) * 1.15,
        f"{format_seconds(seconds)}\n{SOURCE_WORDS.get(source, source)}",
        ha="center",
        va="bottom",
        fontsize="x-small",
    )


def _label_axes(ax, runs: Runs, groups: list, dtypes: list[str], first: pd.DataFrame) -> None:
    """A log time axis from FLOOR_S, a tick per (machine, implementation), a hatch per dtype."""
    from matplotlib.patches import Patch

    ax.set_yscale("log")
    eng_y(ax, "s")
    ax.set_ylim(FLOOR_S, max(1.0, first["compile_s"].max() * 30 if not first.empty else 1.0))
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
            Patch(facecolor="0.6", hatch=HATCHES[k % len(HATCHES)], edgecolor="white", label=dtype)
            for k, dtype in enumerate(dtypes)
        ],
        title="dtype",
        fontsize="small",
        loc="upper right",
    )
