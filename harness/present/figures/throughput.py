"""GFLOP/s against n, under the machine's measured matrix-product peak."""

from __future__ import annotations

import numpy as np

from harness.analysis.runs import Runs
from harness.present.figures.panels import (
    FAR_SLOWER,
    finish_rate_panel,
    n_words,
    note_far,
    per_d_panels,
    valid_series,
)
from harness.results.schema import CUDA_TIMER


def throughput_figure(runs: Runs, dtype: str):
    """GFLOP/s against n, with each machine's measured CPU matrix-product peak as a ceiling:
    the start-of-run peak as a line, the peaks measured alongside large shapes as dashes."""
    fig, panels = per_d_panels(runs, dtype, f"Throughput vs {n_words(runs.frame)}")
    for d, ax, frame in panels:
        missing, far, lines = [], [], []
        for style, label, ok in valid_series(runs, frame, missing):
            lines.append((style, label, ok, ok["flops"] / ok["median_s"] / 1e9))
        best = max((float(np.median(rate)) for *_, rate in lines), default=0.0)
        for style, label, ok, rate in lines:
            if float(np.median(rate)) < FAR_SLOWER * best:  # it would squeeze the others
                far.append(f"{label}: {float(np.median(rate)):.2g} GFLOP/s (left out)")
                continue
            ax.plot(ok["n"], rate, label=label, **style)
        note_far(ax, f"over {1 / FAR_SLOWER:g}× below the fastest", far)
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
        finish_rate_panel(ax, runs, frame, d, missing,
                           f"throughput (GFLOP/s), {counted} FLOPs per head")  # fmt: skip
    return fig
