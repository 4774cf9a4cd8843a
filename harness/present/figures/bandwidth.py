"""GB/s against n, under a streaming read of as many bytes: memory-bound cases' ceiling."""

from __future__ import annotations

from harness.analysis.runs import Runs
from harness.present.figures.panels import (
    finish_rate_panel,
    n_words,
    per_d_panels,
    valid_series,
)


def bandwidth_figure(runs: Runs, dtype: str):
    """GB/s against n (q, K and V once per key/value head read, the output written), with the
    rate of a streaming read of as many bytes by the same threads, measured before each of the
    shape's rounds in the same cache state: the ceiling of a memory-bound case."""
    fig, panels = per_d_panels(runs, dtype, f"Bytes moved per second vs {n_words(runs.frame)}")
    for d, ax, frame in panels:
        missing = []
        for style, label, ok in valid_series(runs, frame, missing):
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
        finish_rate_panel(ax, runs, frame, d, missing, "GB/s: q, K, V read once, output written")
    return fig
