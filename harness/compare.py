"""`attnbench compare A B`: which cases got slower or faster from run A to run B.

A change is marked only when the ratio of medians B/A is beyond the threshold AND the raw samples
differ significantly (two-sided Mann-Whitney U, as asv does): a threshold alone flags noise on a
busy machine, a test alone flags differences too small to matter. The statistics
(`parse_threshold`, `compare_samples`, `compare_tables`) do no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness.options import UsageError
from harness.plotting import format_seconds, impl_order, impl_style, save_figure
from harness.results import CASE_COLUMNS, load_run
from harness.tables import format_table

ALPHA = 0.05  # two-sided; with 5 samples per side the smallest possible p is 2/252 ≈ 0.008
SLOWER, FASTER = "slower", "faster"
NOT_SIGNIFICANT = "not significant"  # beyond the threshold, but within the samples' noise
BROKEN = ("failed", "disagrees")


def parse_threshold(text: str) -> float:
    """ "5%" or "0.05" -> 0.05. A bare number of 1 or more is refused as ambiguous."""
    raw = str(text).strip()
    percent = raw.endswith("%")
    try:
        value = float(raw[:-1] if percent else raw)
    except ValueError:
        raise UsageError(
            f"--threshold: expected a percentage like 5% or a fraction like 0.05, got {text!r}"
        ) from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"--threshold: expected a non-negative finite value, got {text!r}")
    if not percent and value >= 1:
        raise UsageError(
            f"--threshold: {text!r} would mean {value:.0%}; write {raw}% for "
            f"{value:g} percent or a fraction below 1 like 0.05"
        )
    return value / 100 if percent else value


@dataclass(frozen=True)
class Change:
    ratio: float  # median(B) / median(A): above 1 is slower
    p_value: float  # two-sided Mann-Whitney U on the raw samples; nan without samples
    change: str  # SLOWER, FASTER, NOT_SIGNIFICANT, or "" (within the threshold)


def compare_samples(
    a_s: list[float], b_s: list[float], threshold: float, alpha: float = ALPHA
) -> Change:
    """Ratio of medians and the Mann-Whitney verdict for one case's samples (seconds per call)."""
    from scipy.stats import mannwhitneyu

    ratio = float(np.median(b_s) / np.median(a_s))
    p = float(mannwhitneyu(b_s, a_s, alternative="two-sided").pvalue) if a_s and b_s else math.nan
    beyond = ratio > 1 + threshold or ratio < 1 / (1 + threshold)
    if not beyond:
        return Change(ratio, p, "")
    if not p < alpha:  # also when p is nan
        return Change(ratio, p, NOT_SIGNIFICANT)
    return Change(ratio, p, SLOWER if ratio > 1 else FASTER)


def _samples(row: pd.Series, side: str) -> list[float]:
    samples = row.get(f"samples_s_{side}")
    return list(samples) if isinstance(samples, list) else []


def compare_tables(
    a: pd.DataFrame, b: pd.DataFrame, threshold: float, alpha: float = ALPHA
) -> pd.DataFrame:
    """One row per case the two runs share (matched on impl, n, d, dtype, batch, heads, causal).

    `change` is SLOWER/FASTER/NOT_SIGNIFICANT/"" for cases ok in both; for a case whose status
    changed it says so ("now failed", "now ok", ...). `regression` is true for a significant
    slowdown beyond the threshold, and for a case that was ok and now fails or disagrees.
    """
    keep = [*CASE_COLUMNS, "status", "median_s", "samples_s"]
    a = a.reindex(columns=keep)
    b = b.reindex(columns=keep)
    shared = a.merge(b, on=CASE_COLUMNS, suffixes=("_a", "_b"))
    rows = []
    for _, row in shared.iterrows():
        out = {c: row[c] for c in CASE_COLUMNS}
        out.update(
            status_a=row["status_a"],
            status_b=row["status_b"],
            median_a_s=row["median_s_a"],
            median_b_s=row["median_s_b"],
        )
        if row["status_a"] == "ok" and row["status_b"] == "ok":
            change = compare_samples(_samples(row, "a"), _samples(row, "b"), threshold, alpha)
            out.update(
                ratio=change.ratio,
                p_value=change.p_value,
                change=change.change,
                regression=change.change == SLOWER,
            )
        else:
            moved = row["status_a"] != row["status_b"]
            out.update(
                ratio=math.nan,
                p_value=math.nan,
                change=f"now {row['status_b']}" if moved else row["status_b"],
                regression=row["status_a"] == "ok" and row["status_b"] in BROKEN,
            )
        rows.append(out)
    columns = [
        *CASE_COLUMNS,
        "status_a",
        "status_b",
        "median_a_s",
        "median_b_s",
        "ratio",
        "p_value",
        "change",
        "regression",
    ]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["impl", "dtype", "d", "n"]).reset_index(drop=True)


def unshared(a: pd.DataFrame, b: pd.DataFrame) -> tuple[int, int]:
    """How many cases only A has, and how many only B has."""
    keys_a = set(map(tuple, a[CASE_COLUMNS].to_numpy().tolist()))
    keys_b = set(map(tuple, b[CASE_COLUMNS].to_numpy().tolist()))
    return len(keys_a - keys_b), len(keys_b - keys_a)


def summary(table: pd.DataFrame, threshold: float, only_a: int, only_b: int) -> str:
    counts = table["change"].value_counts()
    both_ok = (table["status_a"] == "ok") & (table["status_b"] == "ok")
    status_moves = int((table["status_a"] != table["status_b"]).sum())
    parts = [
        f"{len(table)} shared cases: {counts.get(SLOWER, 0)} slower, {counts.get(FASTER, 0)} "
        f"faster, {int(both_ok.sum()) - counts.get(SLOWER, 0) - counts.get(FASTER, 0)} unchanged",
        f"{status_moves} changed status" if status_moves else "",
        f"{int(table['regression'].sum())} regressions",
    ]
    text = "; ".join(p for p in parts if p)
    return (
        f"{text} (threshold {threshold:.3g} = {threshold:.1%} on B/A, and p < {ALPHA} two-sided "
        f"Mann-Whitney U on the samples); {only_a} cases only in A, {only_b} only in B"
    )


def display_table(table: pd.DataFrame) -> list[dict]:
    """Rows for the terminal; batch, heads and causal shown only when they vary."""
    varying = [c for c in ("batch", "heads", "causal") if table[c].nunique() > 1]
    rows = []
    for _, row in table.iterrows():
        shown = {c: row[c] for c in ["impl", "n", "d", "dtype", *varying]}
        shown.update(
            A=format_seconds(row["median_a_s"]) if row["status_a"] == "ok" else row["status_a"],
            B=format_seconds(row["median_b_s"]) if row["status_b"] == "ok" else row["status_b"],
            **{"B/A": "" if pd.isna(row["ratio"]) else f"{row['ratio']:.3f}"},
            p="" if pd.isna(row["p_value"]) else f"{row['p_value']:.3g}",
            change=row["change"].upper() if row["regression"] else row["change"],
        )
        rows.append(shown)
    return rows


def compare_figure(table: pd.DataFrame, threshold: float, name_a: str, name_b: str):
    """B against A (log-log, with the y = x line and the threshold band) and B/A against n."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.ticker import EngFormatter, FuncFormatter, NullFormatter, NullLocator

    ok = table[(table["status_a"] == "ok") & (table["status_b"] == "ok")]
    fig = Figure(figsize=(12, 5.6), layout="constrained")
    scatter, ratios = fig.subplots(1, 2)
    fig.suptitle(
        f"Run B ({name_b}) against run A ({name_a}): median time per call, "
        f"threshold ±{threshold:.1%}",
        fontsize="medium",
    )
    rings = {SLOWER: "red", FASTER: "green"}
    for impl in impl_order(ok):
        rows = ok[ok["impl"] == impl]
        style = impl_style(impl)
        for ax, x, y in ((scatter, "median_a_s", "median_b_s"), (ratios, "n", "ratio")):
            ax.plot(rows[x], rows[y], linestyle="none", label=impl, alpha=0.8, **style)
            for change, color in rings.items():
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
    if not ok.empty:
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
    scatter.set_xscale("log")
    scatter.set_yscale("log")
    for axis in (scatter.xaxis, scatter.yaxis):
        axis.set_major_formatter(EngFormatter(unit="s"))
        axis.set_minor_formatter(NullFormatter())
    scatter.set_xlabel(f"A: {name_a}, time per call (s)")
    scatter.set_ylabel(f"B: {name_b}, time per call (s)")
    scatter.set_aspect("equal")
    ratios.axhspan(1 / (1 + threshold), 1 + threshold, color="0.85")
    ratios.axhline(1, color="black", linewidth=1)
    ratios.set_yscale("log")
    low, high = ratios.get_ylim()
    ratios.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}×"))
    # minor ticks labelled only when the axis spans less than a decade (else they pile up)
    minor = FuncFormatter(lambda v, _: f"{v:g}×") if high / low < 10 else NullFormatter()
    ratios.yaxis.set_minor_formatter(minor)
    ratios.set_xlabel("sequence length n (tokens)")
    ratios.set_ylabel("B / A, ratio of medians (×; above 1 is slower)")
    extra = [
        Line2D(
            [],
            [],
            linestyle="none",
            marker="o",
            markersize=10,
            markerfacecolor="none",
            markeredgecolor=color,
            label=f"{change} (significant, beyond threshold)",
        )
        for change, color in rings.items()
    ]
    for ax in (scatter, ratios):
        ax.grid(True, which="major", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        ax.legend(handles + extra, labels + [h.get_label() for h in extra], fontsize="small")
    return fig


def run_compare(
    dir_a: str | Path,
    dir_b: str | Path,
    threshold: float,
    out: str | Path | None = None,
) -> tuple[pd.DataFrame, list[str], list[Path]]:
    """Load both runs, compare them, save the figure; returns the table, lines to print, files."""
    (meta_a, a), (meta_b, b) = load_run(dir_a), load_run(dir_b)
    table = compare_tables(a, b, threshold)
    only_a, only_b = unshared(a, b)
    lines = []
    for side, path, meta in (("A", dir_a, meta_a), ("B", dir_b, meta_b)):
        machine = meta.get("machine", {})
        lines.append(
            f"{side}: {path}  ({machine.get('id')}, {machine.get('cpu')}, "
            f"threads {meta.get('threads')}, started {meta.get('started')})"
        )
    ids = (meta_a.get("machine", {}).get("id"), meta_b.get("machine", {}).get("id"))
    if ids[0] != ids[1]:
        lines.append(
            f"note: the runs come from different machines ({ids[0]}, {ids[1]}): "
            "the differences include the machine"
        )
    lines.append(format_table(display_table(table)) if not table.empty else "no shared cases")
    lines.append(summary(table, threshold, only_a, only_b))
    fig = compare_figure(table, threshold, Path(dir_a).name, Path(dir_b).name)
    files = save_figure(fig, out if out is not None else dir_b, "compare")
    lines.append(f"plot: {', '.join(str(f) for f in files)}")
    return table, lines, files
