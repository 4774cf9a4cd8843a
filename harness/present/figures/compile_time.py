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
    fig, axes = new_figure(
        1,
        figure_title("Compile time: first call minus a warm call", runs, None),
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
    eng_y(ax, "s")
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
