"""Every figure of one or several runs, by file name stem, and the files they are saved as."""

from __future__ import annotations

from pathlib import Path

from harness.analysis.ratios import default_baseline
from harness.analysis.runs import NotInRunError, Runs, by_mask, load_runs
from harness.present.figures.agreement import agreement_figure
from harness.present.figures.bandwidth import bandwidth_figure
from harness.present.figures.compile_time import compile_figure
from harness.present.figures.memory import memory_figure
from harness.present.figures.speedup import speedup_figure
from harness.present.figures.throughput import throughput_figure
from harness.present.figures.time_vs_d import time_vs_d_figure
from harness.present.figures.time_vs_n import time_vs_n_figure


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
