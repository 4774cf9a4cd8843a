"""Findings: sentences computed from the data (who wins at the largest n, or a tie; ratios to the
baseline with their intervals; crossovers; how near the limits; what to read with care).
"""

from __future__ import annotations

import pandas as pd

from harness.analysis.ratios import format_ratio, paired_ratios
from harness.analysis.runs import format_seconds, valid_rows
from harness.analysis.summaries import (
    PANEL,
    UNSTABLE_WIDTH,
    best_peak_fraction,
    causal_speedups,
    crossovers,
    fastest_by_n,
    memory_bound,
    panel_name,
    unstable_cases,
)


def fastest_findings(frame: pd.DataFrame, several: bool) -> list[str]:
    """Who is fastest at each panel's largest n, or that no one can be named."""
    lines = []
    fastest = fastest_by_n(frame)
    for _, group in fastest.groupby(PANEL, sort=True):
        last = group.sort_values("n").iloc[-1]
        where = f"{panel_name(last, several)}: at the largest valid n = {last['n']}, "
        if last["faster_unstable"]:
            lines.append(
                f"{where}no fastest can be named: {last['faster_unstable']} measured faster "
                f"than {last['fastest']} but unstable (measure again with more rounds, --ci)."
            )
            continue
        interval = (
            f"[{last['lead_low']:.3g}, {last['lead_high']:.3g}]"
            if pd.notna(last["runner_up"])
            else ""
        )
        if last["tied"]:
            sentence = (
                f"{where}{last['fastest']} and {last['runner_up']} are tied "
                f"({last['runner_up']} / {last['fastest']} = {last['lead']:.3g}× {interval}, "
                "95% interval over rounds)"
            )
        else:
            sentence = (
                f"{where}{last['fastest']} is fastest ({format_seconds(last['median_s'])} per call)"
            )
            if pd.notna(last["runner_up"]):
                sentence += f", {last['lead']:.3g}× {interval} faster than {last['runner_up']}"
        winners = group.loc[~group["tied"].astype(bool), "fastest"].unique()
        if len(winners) == 1 and winners[0] == last["fastest"] and not last["tied"]:
            ties = int(group["tied"].sum())
            sentence += (
                f"; it is fastest at every measured n ({group['n'].min()}–{group['n'].max()})"
                + (f" where the order is clear ({ties} tied)" if ties else "")
            )
        lines.append(sentence + ".")
    return lines


def ratio_findings(frame: pd.DataFrame, several: bool, baseline: str | None) -> list[str]:
    """Each implementation's time over the baseline's at the largest n, with its interval."""
    lines = []
    if baseline is None:
        return lines
    ratios = paired_ratios(frame, baseline)
    for _, panel in ratios.groupby(PANEL, sort=True):
        last = panel[panel["n"] == panel["n"].max()]
        lines.append(
            f"{panel_name(last.iloc[0], several)}, n = {last['n'].iloc[0]}, time over "
            f"{baseline}'s (95% interval; below 1 is faster): "
            + ", ".join(
                f"{r.impl} {format_ratio(r.ratio, r.ratio_low, r.ratio_high)} {r.relation}"
                for r in last.itertuples()
            )
            + "."
        )
    return lines


def crossover_findings(frame: pd.DataFrame, several: bool) -> list[str]:
    """The lasting crossovers, and how many earlier flips were not."""
    lines = []
    cross = crossovers(frame)
    lasting = cross["lasting"].astype(bool)
    for _, row in cross[lasting].iterrows():
        lines.append(
            f"{panel_name(row, several)}: {row['faster_above']} overtakes {row['overtakes']} "
            f"at n ≈ {row['n_cross']:.0f} (order flips between n = {row['between']} and holds "
            "up to the largest n)."
        )
    if (~lasting).any():
        lines.append(
            f"{int((~lasting).sum())} earlier flips of order are not lasting (see the "
            "crossover table); at small n they are often noise."
        )
    return lines


def bound_findings(frame: pd.DataFrame, several: bool) -> list[str]:
    """Which of each panel's sizes are memory-bound and which compute-bound (by the arithmetic
    intensity against the balance measured alongside), where the run has both kinds."""
    ok = valid_rows(frame)
    if "bound" not in ok or ok["bound"].isna().all():
        return []
    lines = []
    for _, panel in ok.groupby(PANEL, sort=True):
        kinds = panel.dropna(subset=["bound"]).groupby("bound")["n"].unique()
        if len(kinds) < 2:
            continue
        sizes = {k: ", ".join(str(n) for n in sorted(v)) for k, v in kinds.items()}
        lines.append(
            f"{panel_name(panel.iloc[0], several)}: memory-bound at n = {sizes['memory']}, "
            f"compute-bound at n = {sizes['compute']} (FLOPs per byte against the machine's "
            "matrix-product peak over the bandwidth of a read of the same bytes)."
        )
    return lines


def limit_findings(frame: pd.DataFrame, several: bool) -> list[str]:
    """How near each limit: the compute-bound cases to the matrix-product peak, the memory-bound
    ones to a read of the same bytes; the causal mask's speed-up."""
    lines = bound_findings(frame, several)
    best = best_peak_fraction(frame).groupby("dtype").head(1).sort_values("dtype")
    for _, row in best.iterrows():
        where = f" @ {row['machine']}" if several else ""
        sentence = (
            f"Closest to the matrix-product peak in {row['dtype']}: {row['impl']}{where} at "
            f"{row['peak_fraction']:.1%} ({row['gflops']:.3g} GFLOP/s of "
            f"{row['gemm_gflops']:.3g}, n = {row['n']}, d = {row['d']})"
        )
        if row["peak_fraction"] > 1:
            sentence += (
                "; above 100%: the measured peak (gemm_gflops) is too low, "
                "e.g. measured while the machine was busy, or the timing is"
            )
        lines.append(sentence + ".")
    for _, panel in memory_bound(frame).groupby(PANEL, sort=True):
        last = panel[panel["n"] == panel["n"].max()].sort_values("gbps", ascending=False)
        first = last.iloc[0]
        lines.append(
            f"{panel_name(first, several)}, n = {first['n']}, memory-bound: "
            + ", ".join(
                f"{r.impl} {r.gbps:.3g} GB/s ({r.bandwidth_fraction:.0%})"
                for r in last.itertuples()
            )
            + " of a typical streaming read of the same bytes"
            + f" ({first['bandwidth_gbps']:.3g} GB/s)."
        )
    masks = causal_speedups(frame)
    for key, panel in masks.groupby(["machine", "dtype", "d", "workload"], sort=True):
        largest = panel[panel["n"] == panel["n"].max()].sort_values("speedup", ascending=False)
        where = f" @ {key[0]}" if several else ""
        lines.append(
            f"Causal mask{where}, {key[1]}, d={key[2]}, n = {largest['n'].iloc[0]}: "
            + ", ".join(_speedup_text(r) for r in largest.itertuples())
            + " faster than the full mask (about 2× is the aim: half the work)."
        )
    return lines


def _speedup_text(row) -> str:
    """'fused 1.89× [1.80, 1.95]': the causal speed-up, with its interval where it has one."""
    interval = (
        "" if pd.isna(row.speedup_low) else f" [{row.speedup_low:.2f}, {row.speedup_high:.2f}]"
    )
    return f"{row.impl} {row.speedup:.2f}×{interval}"


def trust_findings(frame: pd.DataFrame, baseline: str | None) -> list[str]:
    """What to read with care: unstable cases, and cases without a valid timing."""
    lines = []
    left_out = int(valid_rows(frame)["unstable"].eq(True).sum())
    if left_out:
        lines.append(
            f"{left_out} cases whose median's interval spans more than {UNSTABLE_WIDTH:.0%} "
            "are left out of the fastest and crossover findings (listed under Unstable cases)."
        )
    shaky = len(unstable_cases(frame, baseline))
    if shaky:
        lines.append(
            f"{shaky} measured cases are unstable (listed at the end): the interval of their "
            f"median or of their ratio to {baseline} spans more than {UNSTABLE_WIDTH:.0%} of it; "
            "read them with care, or measure them again with more rounds (--ci)."
        )
    counts = frame["status"].value_counts()
    bad = {s: int(counts.get(s, 0)) for s in ("skipped", "failed", "disagrees")}
    if any(bad.values()):
        lines.append(
            "Cases without a valid timing: "
            + ", ".join(f"{count} {status}" for status, count in bad.items() if count)
            + " (listed at the end)."
        )
    return lines


def findings(frame: pd.DataFrame, several: bool, baseline: str | None = None) -> list[str]:
    """Sentences computed from the data: who wins at the largest n (or ties), ratios to the
    baseline with their intervals, crossovers, the limits, unstable cases."""
    return [
        *fastest_findings(frame, several),
        *ratio_findings(frame, several, baseline),
        *crossover_findings(frame, several),
        *limit_findings(frame, several),
        *trust_findings(frame, baseline),
    ]
