"""`attnbench compare A B`: which cases got slower or faster from run A to run B.

Each case is compared on its drift-normalised samples (each round's times the rate of that
round's reference workload, measured just before it), so that a machine running 10-30% slower
during one run than during the other does not read as a change of the code. The change is
median(B) / median(A) with a 95% interval from resampling whole rounds of each run
(harness/stats.py); a case is marked only when the whole interval lies beyond the threshold,
and the raw change's interval too (see `compare_rounds`).
Samples within a round are not independent (one process, one moment), so no test treats them
as if they were. The statistics (`compare_rounds`, `compare_tables`) do no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from harness import stats
from harness.plotting import impl_order, impl_style, save_figure
from harness.results.rundir import RunDirError, load_run
from harness.results.schema import CASE_COLUMNS
from harness.runs import format_seconds
from harness.tables import format_table

SLOWER, FASTER = "slower", "faster"
BROKEN = ("failed", "disagrees")
OTHER_MACHINE = "not judged: other machine"


@dataclass(frozen=True)
class Change:
    raw: stats.Interval  # B/A of the round medians, seconds as measured
    normalised: stats.Interval  # B/A of the drift-normalised rounds: what is judged
    change: str  # SLOWER, FASTER or "" (the interval reaches inside the threshold)


def compare_rounds(
    a_rounds_s: list, b_rounds_s: list, a_normalised: list, b_normalised: list, threshold: float
) -> Change:
    """One case: raw and normalised B/A with their intervals. Marked when the normalised
    interval lies beyond the threshold, and the raw one too, on the same side: a drift of the
    machine moves the raw figure alone, a passing disturbance of a reference workload the
    normalised one alone; a change of the code moves both. Each list holds a run's rounds: a
    round's samples, or one number per round."""
    raw, normalised = stats.change(a_rounds_s, b_rounds_s), stats.change(a_normalised, b_normalised)
    judged = stats.verdict(normalised, threshold)
    return Change(raw, normalised, judged if stats.verdict(raw, threshold) == judged else "")


def _rounds(row: pd.Series, column: str, side: str) -> list:
    values = row.get(f"{column}_{side}")
    return list(values) if isinstance(values, list) else []


def _raw(row: pd.Series, side: str) -> list:
    """Each round's samples (seconds), or each round's median where the run kept no more."""
    return _rounds(row, "round_samples_s", side) or _rounds(row, "round_medians_s", side)


def _normalised(row: pd.Series, side: str) -> list:
    """Each round's samples times that round's reference rate: the drift taken out. Where the
    two runs took different references (a case near the machine's balance), the raw rounds:
    GFLOP and GB are not to be divided by each other."""
    if row.get("drift_reference_a") != row.get("drift_reference_b"):
        return _raw(row, side)
    samples, rates = (
        _rounds(row, "round_samples_s", side),
        _rounds(row, "round_reference_rates", side),
    )
    if samples and len(rates) == len(samples):
        return [[s * rate for s in r] for r, rate in zip(samples, rates, strict=True)]
    return _rounds(row, "round_normalised", side)


def compare_tables(
    a: pd.DataFrame, b: pd.DataFrame, threshold: float, judge: bool = True
) -> pd.DataFrame:
    """One row per case the two runs share (matched on impl, n, d, dtype, batch, heads, causal).

    `change` is SLOWER/FASTER/"" for cases ok in both (OTHER_MACHINE when `judge` is False); for
    a case whose status changed it says so ("now failed", "now ok", ...). `regression` is true
    for a slowdown whose whole interval is beyond the threshold, and for a case that was ok and
    now fails or disagrees.
    """
    keep = [*CASE_COLUMNS, "status", "median_s", "round_medians_s", "round_normalised"]
    keep += ["round_samples_s", "round_reference_rates", "drift_reference"]
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
            change = compare_rounds(
                _raw(row, "a"), _raw(row, "b"), _normalised(row, "a"), _normalised(row, "b"),
                threshold,
            )  # fmt: skip
            verdict = change.change if judge else OTHER_MACHINE
            out.update(
                raw_ratio=change.raw.value,
                raw_low=change.raw.low,
                raw_high=change.raw.high,
                ratio=change.normalised.value,
                ratio_low=change.normalised.low,
                ratio_high=change.normalised.high,
                change=verdict,
                regression=verdict == SLOWER,
            )
        else:
            moved = row["status_a"] != row["status_b"]
            out.update(
                raw_ratio=math.nan,
                raw_low=math.nan,
                raw_high=math.nan,
                ratio=math.nan,
                ratio_low=math.nan,
                ratio_high=math.nan,
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
        "raw_ratio",
        "raw_low",
        "raw_high",
        "ratio",
        "ratio_low",
        "ratio_high",
        "change",
        "regression",
    ]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["impl", "dtype", "d", "n"]).reset_index(drop=True)


def differences(meta_a: dict, meta_b: dict) -> list[str]:
    """What differs between the runs' conditions, each a warning line."""
    lines = []
    machine_a, machine_b = meta_a.get("machine", {}), meta_b.get("machine", {})
    if machine_a.get("id") != machine_b.get("id"):
        lines.append(
            f"warning: different machines ({machine_a.get('id')}: {machine_a.get('cpu')}; "
            f"{machine_b.get('id')}: {machine_b.get('cpu')}): no case is judged"
        )
    if meta_a.get("threads") != meta_b.get("threads"):
        lines.append(f"warning: threads differ ({meta_a.get('threads')}, {meta_b.get('threads')})")
    versions_a, versions_b = meta_a.get("versions", {}), meta_b.get("versions", {})
    moved = sorted(
        f"{name} {versions_a.get(name)} -> {versions_b.get(name)}"
        for name in set(versions_a) | set(versions_b)
        if versions_a.get(name) != versions_b.get(name)
    )
    if moved:
        lines.append(f"warning: library versions differ: {', '.join(moved)}")
    method_a, method_b = meta_a.get("method", {}), meta_b.get("method", {})
    keys = sorted(k for k in set(method_a) | set(method_b) if method_a.get(k) != method_b.get(k))
    if keys:
        lines.append(f"warning: the method differs in {', '.join(keys)}")
    return lines


def same_machine(meta_a: dict, meta_b: dict) -> bool:
    return meta_a.get("machine", {}).get("id") == meta_b.get("machine", {}).get("id")


def require_rounds(meta: dict, path) -> None:
    """compare needs each round's reference: refuse runs measured before it was recorded."""
    if "migrated_from" in meta:
        raise RunDirError(
            f"{path}: measured by an older attnbench (schema {meta['migrated_from']}), without "
            "a reference workload per round, so its cases cannot be compared with the drift "
            f"removed; measure it again with: {meta.get('command', 'attnbench run ...')}"
        )


def unshared(a: pd.DataFrame, b: pd.DataFrame) -> tuple[int, int]:
    """How many cases only A has, and how many only B has."""
    keys_a = set(map(tuple, a[CASE_COLUMNS].to_numpy().tolist()))
    keys_b = set(map(tuple, b[CASE_COLUMNS].to_numpy().tolist()))
    return len(keys_a - keys_b), len(keys_b - keys_a)


def summary(table: pd.DataFrame, threshold: float, only_a: int, only_b: int) -> str:
    counts = table["change"].value_counts()
    both_ok = (table["status_a"] == "ok") & (table["status_b"] == "ok")
    status_moves = int((table["status_a"] != table["status_b"]).sum())
    marked = counts.get(SLOWER, 0) + counts.get(FASTER, 0)
    parts = [
        f"{len(table)} shared cases: {counts.get(SLOWER, 0)} slower, {counts.get(FASTER, 0)} "
        f"faster, {int(both_ok.sum()) - marked} not marked",
        f"{status_moves} changed status" if status_moves else "",
        f"{int(table['regression'].sum())} regressions",
    ]
    text = "; ".join(p for p in parts if p)
    return (
        f"{text} (marked only when the whole 95% interval of B/A, drift-normalised and raw, lies "
        f"beyond ±{threshold:.1%}); {only_a} cases only in A, {only_b} only in B"
    )


def _interval(value, low, high) -> str:
    return "" if pd.isna(value) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def display_table(table: pd.DataFrame) -> list[dict]:
    """Rows for the terminal; batch, heads and causal shown only when they vary."""
    varying = [c for c in ("batch", "heads", "kv_heads", "n_q", "causal") if table[c].nunique() > 1]
    rows = []
    for _, row in table.iterrows():
        shown = {c: row[c] for c in ["impl", "n", "d", "dtype", *varying]}
        shown.update(
            A=format_seconds(row["median_a_s"]) if row["status_a"] == "ok" else row["status_a"],
            B=format_seconds(row["median_b_s"]) if row["status_b"] == "ok" else row["status_b"],
            **{
                "B/A raw [95%]": _interval(row["raw_ratio"], row["raw_low"], row["raw_high"]),
                "B/A normalised [95%]": _interval(
                    row["ratio"], row["ratio_low"], row["ratio_high"]
                ),
            },
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
    ratios.set_ylabel("B / A, drift-normalised, 95% interval (×; above 1 is slower)")
    extra = [
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
    require_rounds(meta_a, dir_a)
    require_rounds(meta_b, dir_b)
    table = compare_tables(a, b, threshold, judge=same_machine(meta_a, meta_b))
    only_a, only_b = unshared(a, b)
    lines = []
    for side, path, meta in (("A", dir_a, meta_a), ("B", dir_b, meta_b)):
        machine = meta.get("machine", {})
        lines.append(
            f"{side}: {path}  ({machine.get('id')}, {machine.get('cpu')}, "
            f"threads {meta.get('threads')}, started {meta.get('started')})"
        )
    lines.extend(differences(meta_a, meta_b))
    lines.append(format_table(display_table(table)) if not table.empty else "no shared cases")
    lines.append(summary(table, threshold, only_a, only_b))
    fig = compare_figure(table, threshold, Path(dir_a).name, Path(dir_b).name)
    files = save_figure(fig, out if out is not None else dir_b, "compare")
    lines.append(f"plot: {', '.join(str(f) for f in files)}")
    return table, lines, files
