"""`attnbench report DIR`: report.md and a self-contained report.html with findings from the data.

The findings (fastest implementation per n, crossovers, scaling exponents, the causal mask's
speed-up, best fraction of the peak, unstable cases, cases without a valid timing) are pure
functions of the results table, so they can be tested on synthetic runs; the report is a list
of blocks rendered once as Markdown and once as HTML (PNG figures embedded as base64, so the
HTML file travels alone).
"""

from __future__ import annotations

import base64
import html
import itertools
import math
from pathlib import Path

import numpy as np
import pandas as pd

from harness import plotting, stats
from harness.ratios import SHAPE, default_baseline, format_ratio, paired_ratios, round_values
from harness.results.machine import tracked_by_git
from harness.results.schema import CUDA_TIMER
from harness.runs import (
    FIT_POINTS,
    Runs,
    by_mask,
    fit_exponent,
    format_seconds,
    load_runs,
    valid_rows,
)

UNSTABLE_WIDTH = 0.2  # a stated figure whose interval spans more than 20% of it

PANEL = ["machine", "dtype", "d", "workload", "causal"]  # cases that differ only in n, impl
FIGURE_CAPTIONS = {
    "time_vs_n": "Time per call against n (log-log); the band is the median's 95% interval from "
    "the rounds and each label carries the fitted exponent (2 means O(n²)).",
    "throughput": "Throughput against n, with the machine's measured CPU matrix-product peak.",
    "bandwidth": "Bytes moved per second against n (q, K and V read once per key/value head, the "
    "output written), with the rate of a streaming read of as many bytes by the same threads, "
    "measured before each of the shape's rounds in the same cache state.",
    "speedup": "Speedup over the baseline (its time divided by each implementation's, round by "
    "round), with 95% intervals.",
    "time_vs_d": "Time per call against the head dimension d at one n.",
    "memory": "Peak extra resident memory of one call against n, with the n×n score matrix.",
    "agreement": "Largest error relative to max|v| against n, with the tolerance.",
    "compile_time": "Compile time: the first call minus a warm call, and where the code came from.",
}


def trusted_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """Valid cases whose median is not flagged unstable: what fastest and crossover claims rest
    on (a disturbed case is listed apart, never built on)."""
    ok = valid_rows(frame)
    return ok[~ok["unstable"].eq(True)]


def fastest_by_n(frame: pd.DataFrame) -> pd.DataFrame:
    """For each panel and n: the fastest valid implementation, its time, and its lead over the
    runner-up (runner-up time / fastest time, round by round) with its interval; `tied` when
    that interval holds 1 (the run cannot tell the two apart)."""
    rows = []
    shaky = valid_rows(frame)[valid_rows(frame)["unstable"].eq(True)]
    for key, group in trusted_rows(frame).groupby([*PANEL, "n"], sort=True):
        left_out = shaky[(shaky[[*PANEL, "n"]] == pd.Series(key, index=[*PANEL, "n"])).all(axis=1)]
        ranked = group.sort_values("median_s")
        first = ranked.iloc[0]
        second = ranked.iloc[1] if len(ranked) > 1 else None
        lead = _lead(first, second)
        rows.append(
            {
                **dict(zip([*PANEL, "n"], key, strict=True)),
                "fastest": first["impl"],
                "median_s": first["median_s"],
                "runner_up": None if second is None else second["impl"],
                "lead": None if lead is None else lead.value,
                "lead_low": None if lead is None else lead.low,
                "lead_high": None if lead is None else lead.high,
                "tied": lead is not None and lead.low <= 1,
                "left_out_unstable": ", ".join(sorted(left_out["impl"])),
                # a disturbed case that measured faster: no winner can be named at this n
                "faster_unstable": ", ".join(
                    sorted(left_out.loc[left_out["median_s"] < first["median_s"], "impl"])
                ),
            }
        )
    columns = [*PANEL, "n", "fastest", "median_s", "runner_up", "lead", "lead_low", "lead_high"]
    return pd.DataFrame(rows, columns=[*columns, "tied", "left_out_unstable", "faster_unstable"])


def _lead(first, second) -> stats.Interval | None:
    """The runner-up's time over the fastest's, paired by round when both have their rounds."""
    if second is None:
        return None
    rounds_a, rounds_b = round_values(first), round_values(second)
    if rounds_a is not None and rounds_b is not None and len(rounds_a) == len(rounds_b):
        return stats.paired_ratio(rounds_b, rounds_a)
    value = second["median_s"] / first["median_s"]
    return stats.Interval(value, value, value)  # an older run: no rounds to pair


def crossovers(frame: pd.DataFrame) -> pd.DataFrame:
    """Where one implementation overtakes another: between two measured sizes where their order
    flips, at the n where the log-log lines between those sizes cross (exact for power laws).

    `lasting` marks the last flip of a pair, after which the order holds up to the largest n:
    the crossover a reader means; earlier flips are often noise at small n.
    """
    rows = []
    for key, group in trusted_rows(frame).groupby(PANEL, sort=True):
        times = group.pivot_table(index="n", columns="impl", values="median_s", aggfunc="last")
        for a, b in itertools.combinations(sorted(times.columns), 2):
            both = times[[a, b]].dropna()
            log_ratio = np.log(both[a] / both[b]).to_numpy()  # < 0 where a is faster
            log_n = np.log(both.index.to_numpy(dtype=float))
            for i in range(len(both) - 1):
                r0, r1 = log_ratio[i], log_ratio[i + 1]
                if r0 * r1 >= 0:
                    continue
                n_cross = math.exp(log_n[i] + (log_n[i + 1] - log_n[i]) * r0 / (r0 - r1))
                winner, loser = (a, b) if r1 < 0 else (b, a)
                rows.append(
                    {
                        **dict(zip(PANEL, key, strict=True)),
                        "faster_above": winner,
                        "overtakes": loser,
                        "n_cross": n_cross,
                        "between": f"{both.index[i]}–{both.index[i + 1]}",
                        "lasting": bool((np.sign(log_ratio[i + 1 :]) == np.sign(r1)).all()),
                    }
                )
    columns = [*PANEL, "faster_above", "overtakes", "n_cross", "between", "lasting"]
    return pd.DataFrame(rows, columns=columns)


def exponents(frame: pd.DataFrame) -> pd.DataFrame:
    """Fitted exponents of time and of peak memory in n, over the largest measured sizes."""
    rows = []
    for key, group in valid_rows(frame).groupby([*PANEL, "impl"], sort=True):
        group = group.sort_values("n")
        fitted = group.iloc[-FIT_POINTS:]
        memory = group[group["peak_mem_bytes"] > 0]
        rows.append(
            {
                **dict(zip([*PANEL, "impl"], key, strict=True)),
                "time_exponent": fit_exponent(group["n"], group["median_s"]),
                "memory_exponent": fit_exponent(memory["n"], memory["peak_mem_bytes"]),
                "fitted_n": f"{fitted['n'].min()}–{fitted['n'].max()}",
            }
        )
    columns = [*PANEL, "impl", "time_exponent", "memory_exponent", "fitted_n"]
    return pd.DataFrame(rows, columns=columns)


def best_peak_fraction(frame: pd.DataFrame) -> pd.DataFrame:
    """Per machine, implementation and dtype: the compute-bound case closest to the
    matrix-product peak (a memory-bound one's ceiling is the bandwidth, not the peak)."""
    ok = valid_rows(frame).dropna(subset=["peak_fraction"])
    if "bound" in ok:
        ok = ok[~ok["bound"].eq("memory")]
    ok = ok[ok["timer"] != CUDA_TIMER]  # runs written before GPU rows went without a fraction
    best = ok.loc[ok.groupby(["machine", "impl", "dtype"])["peak_fraction"].idxmax()]
    best = best.sort_values("peak_fraction", ascending=False)
    # Runs from before the column existed divided by their start-of-run peak: recover it.
    best["gemm_gflops"] = best["gemm_gflops"].fillna(best["gflops"] / best["peak_fraction"])
    columns = ["machine", "impl", "dtype", "n", "d", "gflops", "gemm_gflops", "peak_fraction"]
    if best.get("gemm_best_gflops", pd.Series(dtype=float)).notna().any():
        columns.insert(-1, "gemm_best_gflops")  # runs before it took the best as the peak
    return best[columns].reset_index(drop=True)


def memory_bound(frame: pd.DataFrame) -> pd.DataFrame:
    """Valid cases whose arithmetic intensity is below the machine's balance (GEMM peak over
    the bandwidth of a read of their bytes): their limit is the bandwidth, their figure GB/s."""
    ok = valid_rows(frame)
    if "bound" not in ok:
        return pd.DataFrame(columns=[*PANEL, "n", "impl", "gbps", "bandwidth_gbps"])
    rows = ok[ok["bound"].eq("memory")].sort_values([*PANEL, "n", "gbps"], ascending=True)
    columns = [*PANEL, "n", "impl", "gbps", "bandwidth_gbps", "bandwidth_fraction"]
    return rows[columns].reset_index(drop=True)


def bandwidth_table(bound: pd.DataFrame) -> pd.DataFrame:
    """Memory-bound cases, a row per panel and n: the read's GB/s, then each implementation's
    GB/s with its fraction of that read."""
    cells = bound.assign(
        cell=[f"{r.gbps:.3g} ({r.bandwidth_fraction:.0%})" for r in bound.itertuples()]
    )
    table = cells.pivot_table(index=[*PANEL, "n"], columns="impl", values="cell", aggfunc="last")
    reads = bound.groupby([*PANEL, "n"])["bandwidth_gbps"].median().map(lambda v: f"{v:.3g}")
    table.insert(0, "read GB/s", reads)
    return table.reset_index().rename_axis(columns=None).fillna("")


def problem_cases(frame: pd.DataFrame) -> pd.DataFrame:
    """Skipped, failed and disagreeing cases, those with the same note collapsed into one row."""
    bad = frame[frame["status"] != "ok"].copy()
    bad["note"] = bad["note"].fillna("")
    bad["case"] = "n=" + bad["n"].astype(str) + " d=" + bad["d"].astype(str)
    bad.loc[bad["causal"].astype(bool), "case"] += " causal"
    grouped = bad.groupby(["machine", "impl", "dtype", "status", "note"], sort=False)["case"]
    out = grouped.agg(", ".join).reset_index()
    return out[["machine", "impl", "dtype", "status", "case", "note"]].rename(
        columns={"case": "cases"}
    )


def causal_speedups(frame: pd.DataFrame) -> pd.DataFrame:
    """Where a run measured a shape with and without the causal mask (`--causal both`): how
    many times faster the causal call is than the full one. It skips about half the work, so
    about 2x is the aim; the two were measured in the same minute of the machine."""
    ok = valid_rows(frame).assign(causal=lambda t: t["causal"].astype(bool))
    keys = ["machine", "impl", "dtype", "d", "workload", "n"]
    full = ok[~ok["causal"]].set_index(keys)["median_s"]
    causal = ok[ok["causal"]].set_index(keys)["median_s"]
    both = pd.concat({"full_s": full, "causal_s": causal}, axis=1, join="inner").reset_index()
    both["speedup"] = both["full_s"] / both["causal_s"]
    return both.sort_values(["machine", "dtype", "d", "impl", "n"]).reset_index(drop=True)


def unstable_cases(frame: pd.DataFrame, baseline: str | None = None) -> pd.DataFrame:
    """Measured cases whose stated figures are not to be trusted alone: the median's interval
    (from the rounds) or the ratio's to the baseline spans more than UNSTABLE_WIDTH of it."""
    ok = valid_rows(frame)
    ok = ok.assign(
        median_width=(ok["median_high_s"] - ok["median_low_s"]) / ok["median_s"]
        if "median_low_s" in ok
        else float("nan")
    )
    if baseline is not None:
        ratios = paired_ratios(frame, baseline)
        ratios["ratio_width"] = (ratios["ratio_high"] - ratios["ratio_low"]) / ratios["ratio"]
        keys = ["machine", "impl", *SHAPE[1:]]
        ok = ok.merge(ratios[[*keys, "ratio_width"]], on=keys, how="left")
    else:
        ok = ok.assign(ratio_width=float("nan"))
    shaky = ok[
        ok["unstable"].eq(True)
        | (ok["median_width"] > UNSTABLE_WIDTH)
        | (ok["ratio_width"] > UNSTABLE_WIDTH)
    ].sort_values(["machine", "dtype", "d", "n", "impl"])
    columns = [
        *["machine", "impl", "dtype", "d", "n", "causal"],
        *["median_s", "median_width", "ratio_width", "round_spread"],
    ]
    return shaky[columns].reset_index(drop=True)


def ratio_table(ratios: pd.DataFrame, dtype: str, d: int) -> pd.DataFrame:
    """Time over the baseline's with its interval, n by implementation; tied cells say so."""
    panel = ratios[(ratios["dtype"] == dtype) & (ratios["d"] == d)]
    several = panel["machine"].nunique() > 1
    cells = panel.assign(
        cell=[
            format_ratio(r.ratio, r.ratio_low, r.ratio_high)
            + (" tied" if r.relation == "tied" else "")
            for r in panel.itertuples()
        ],
        column=panel["impl"] + " @ " + panel["machine"] if several else panel["impl"],
    )
    table = cells.pivot_table(index="n", columns="column", values="cell", aggfunc="last")
    return table.reset_index().rename_axis(columns=None).fillna("")


# --------------------------------------------------------------------------- display


def _bytes(value) -> str:
    if value is None or pd.isna(value):
        return ""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


def _number(value, spec: str = ".3g", suffix: str = "") -> str:
    return "" if value is None or pd.isna(value) else f"{value:{spec}}{suffix}"


def _panel_name(row, several: bool) -> str:
    text = f"{row['dtype']}, d={row['d']}"
    if row["workload"]:
        text += f", {row['workload']}"
    if row.get("causal", False):
        text += ", causal"
    return f"{text} @ {row['machine']}" if several else text


def _shown(table: pd.DataFrame, several: bool) -> pd.DataFrame:
    """Panel columns folded into one readable column; the machine only when there are several."""
    if table.empty:
        return table
    panel = table.apply(lambda row: _panel_name(row, several), axis=1)
    rest = table.drop(columns=[c for c in PANEL if c in table.columns])
    return rest.assign(setting=panel)[["setting", *rest.columns]]


def time_table(frame: pd.DataFrame, dtype: str, d: int) -> pd.DataFrame:
    """Median time per call, n by implementation; a case with no valid timing shows its status."""
    panel = frame[(frame["dtype"] == dtype) & (frame["d"] == d)]
    several = frame["machine"].nunique() > 1
    cells = panel.assign(
        cell=[
            format_seconds(row["median_s"]) if row["status"] == "ok" else row["status"]
            for _, row in panel.iterrows()
        ],
        column=panel["impl"] + " @ " + panel["machine"] if several else panel["impl"],
    )
    table = cells.pivot_table(index="n", columns="column", values="cell", aggfunc="last")
    return table.reset_index().rename_axis(columns=None).fillna("")


def fastest_findings(frame: pd.DataFrame, several: bool) -> list[str]:
    """Who is fastest at each panel's largest n, or that no one can be named."""
    lines = []
    fastest = fastest_by_n(frame)
    for _, group in fastest.groupby(PANEL, sort=True):
        last = group.sort_values("n").iloc[-1]
        where = f"{_panel_name(last, several)}: at the largest valid n = {last['n']}, "
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
            f"{_panel_name(last.iloc[0], several)}, n = {last['n'].iloc[0]}, time over "
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
            f"{_panel_name(row, several)}: {row['faster_above']} overtakes {row['overtakes']} "
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
            f"{_panel_name(panel.iloc[0], several)}: memory-bound at n = {sizes['memory']}, "
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
            f"{_panel_name(first, several)}, n = {first['n']}, memory-bound: "
            + ", ".join(
                f"{r.impl} {r.gbps:.3g} GB/s ({r.bandwidth_fraction:.0%})"
                for r in last.itertuples()
            )
            + f" of a streaming read of the same bytes ({first['bandwidth_gbps']:.3g} GB/s)."
        )
    masks = causal_speedups(frame)
    for key, panel in masks.groupby(["machine", "dtype", "d", "workload"], sort=True):
        largest = panel[panel["n"] == panel["n"].max()].sort_values("speedup", ascending=False)
        where = f" @ {key[0]}" if several else ""
        lines.append(
            f"Causal mask{where}, {key[1]}, d={key[2]}, n = {largest['n'].iloc[0]}: "
            + ", ".join(f"{r.impl} {r.speedup:.2f}×" for r in largest.itertuples())
            + " faster than the full mask (about 2× is the aim: half the work)."
        )
    return lines


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


def machine_table(meta: dict) -> pd.DataFrame:
    machine, settings = meta.get("machine", {}), meta.get("settings", {})
    blas = "; ".join(
        f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('num_threads')} threads)"
        for pool in meta.get("blas", [])
    )
    versions = ", ".join(f"{k} {v}" for k, v in meta.get("versions", {}).items() if v)
    end = meta.get("gemm_peak_end_gflops", {})
    peaks = ", ".join(
        f"{dtype} {gflops:.3g} GFLOP/s"
        + (f" at the start, {end[dtype]:.3g} at the end" if dtype in end else "")
        for dtype, gflops in meta.get("gemm_peak_gflops", {}).items()
    )
    git = meta.get("git", {})
    items = {
        "machine": f"{machine.get('id')} — {machine.get('cpu')} ({machine.get('arch')})",
        "cores": f"{machine.get('physical_cores')} physical, "
        f"{machine.get('logical_cores')} logical, {machine.get('usable_cores')} usable",
        "memory": _bytes(machine.get("memory_bytes")),
        "GPUs": ", ".join(g.get("name", "?") for g in machine.get("gpus", [])) or "none",
        "OS": machine.get("os"),
        "threads": meta.get("threads"),
        "BLAS": blas,
        "CPU matrix-product peak (measured)": peaks,
        "sizes": f"n {settings.get('n')}, d {settings.get('d')}, dtype {settings.get('dtype')}",
        "shape": f"batch {settings.get('batch')}, heads {settings.get('heads')}, "
        f"kv heads {settings.get('kv_heads') or settings.get('heads')}, "
        f"n_q {settings.get('n_q') or 'n'}, tokens {settings.get('tokens') or '-'}, "
        f"causal {settings.get('causal')}, "
        f"caches {'evicted before each call' if settings.get('cold_cache') else 'warm'}",
        "timing": f"target {settings.get('target_s')} s per case"
        + (f" in {settings['rounds']} interleaved rounds" if "rounds" in settings else "")
        + f", budget {settings.get('budget_s')} s per call, "
        f"at least {settings.get('min_samples')} samples",
        "method": "; ".join(f"{k}: {v}" for k, v in meta.get("method", {}).items() if v),
        "versions": versions,
        "git": f"{git.get('commit')}{' (dirty)' if git.get('dirty') else ''}",
        "command": meta.get("command"),
        "started / ended": f"{meta.get('started')} / {meta.get('ended')}",
    }
    return pd.DataFrame({"": list(items), "value": [str(v) for v in items.values()]})


def variant_table(frame: pd.DataFrame, several: bool) -> pd.DataFrame:
    """Which code each implementation ran where it has several (its register tile and vector
    width, the decode path), and in how many cases: a figure holds for that code."""
    keys = ["machine", "impl", "dtype", "variant"] if several else ["impl", "dtype", "variant"]
    if "variant" not in frame:
        return pd.DataFrame(columns=[*keys, "cases"])
    named = frame[frame["variant"].map(lambda v: isinstance(v, str) and v != "")]
    return named.groupby(keys, sort=True).size().reset_index(name="cases")


def _variant_section(frame: pd.DataFrame, several: bool) -> list[tuple]:
    table = variant_table(frame, several)
    return [("h", 2, "Which code ran"), ("table", table)] if not table.empty else []


def _fastest_section(frame: pd.DataFrame, several: bool) -> list[tuple]:
    """The fastest implementation at each n, with its lead."""
    blocks: list[tuple] = []
    fastest = (
        fastest_by_n(frame)
        .assign(
            median_s=lambda t: t["median_s"].map(format_seconds),
            lead=lambda t: [
                "" if pd.isna(r.lead) else format_ratio(r.lead, r.lead_low, r.lead_high)
                for r in t.itertuples()
            ],
            runner_up=lambda t: t["runner_up"].fillna(""),
        )
        .drop(columns=["lead_low", "lead_high", "faster_unstable"])
    )
    blocks += [
        ("h", 3, "Fastest implementation at each n"),
        (
            "p",
            "Among the cases not flagged unstable (those are named in left_out_unstable). "
            "lead: the runner-up's time over the fastest's, from the rounds they shared, with "
            "its 95% interval; tied where that interval holds 1.",
        ),
        ("table", _shown(fastest, several)),
    ]
    return blocks


def _ratio_section(frame: pd.DataFrame, baseline: str | None) -> list[tuple]:
    """Each implementation's time over the baseline's, a table per dtype and d."""
    blocks: list[tuple] = []
    ratios = paired_ratios(frame, baseline) if baseline is not None else pd.DataFrame()
    if not ratios.empty:
        blocks += [
            ("h", 3, f"Time over {baseline}'s, with 95% intervals"),
            (
                "p",
                f"Each implementation's median time over {baseline}'s, both over all rounds "
                "(they took turns within each round), with its 95% interval from resampling "
                "whole rounds, the same rounds for both; below 1 is faster, and tied where the "
                "interval holds 1.",
            ),
        ]
        for dtype in sorted(ratios["dtype"].unique()):
            for d in sorted(ratios.loc[ratios["dtype"] == dtype, "d"].unique()):
                blocks += [("h", 4, f"{dtype}, d = {d}"), ("table", ratio_table(ratios, dtype, d))]
    return blocks


def _scaling_sections(frame: pd.DataFrame, several: bool) -> list[tuple]:
    """Crossovers, scaling exponents, memory-bound cases and the causal speed-up."""
    blocks: list[tuple] = []
    cross = crossovers(frame).assign(n_cross=lambda t: t["n_cross"].map(lambda v: f"{v:.0f}"))
    blocks += [
        ("h", 3, "Crossovers"),
        (
            "p",
            "Where the order of two implementations flips between two measured n; n_cross is "
            "where their log-log lines cross.",
        ),
        ("table", _shown(cross, several)) if not cross.empty else ("p", "No crossovers."),
    ]
    scaling = exponents(frame).assign(
        time_exponent=lambda t: t["time_exponent"].map(lambda v: _number(v, ".2f")),
        memory_exponent=lambda t: t["memory_exponent"].map(lambda v: _number(v, ".2f")),
    )
    blocks += [
        ("h", 3, "Scaling exponents"),
        (
            "p",
            f"Slope of log time (and log peak memory) against log n over the {FIT_POINTS} "
            "largest valid n: 2 is O(n²); memory 2 means the scores are materialised, 1 fused.",
        ),
        ("table", _shown(scaling, several)),
    ]
    bound = memory_bound(frame)
    if not bound.empty:
        blocks += [
            ("h", 3, "Memory-bound cases: bytes per second"),
            (
                "p",
                "Cases whose arithmetic intensity (FLOPs per byte moved: q, K and V read once "
                "per key/value head, the output written) is below the machine's balance (its "
                "matrix-product peak over the bandwidth of a streaming read of the same bytes, "
                "both measured alongside): their ceiling is the bandwidth. Each cell: GB/s "
                "and, in brackets, its fraction of that read's rate.",
            ),
            ("table", _shown(bandwidth_table(bound), several)),
        ]
    masks = causal_speedups(frame).assign(
        full_s=lambda t: t["full_s"].map(format_seconds),
        causal_s=lambda t: t["causal_s"].map(format_seconds),
        speedup=lambda t: t["speedup"].map(lambda v: _number(v, ".3g", "×")),
    )
    if not masks.empty:
        blocks += [
            ("h", 3, "Causal mask: speed-up over the full mask"),
            (
                "p",
                "The same shape with and without the causal mask, measured one after the "
                "other: the full call's median time over the causal one's (it skips about "
                "half the work).",
            ),
            ("table", _shown(masks, several)),
        ]
    return blocks


def _peak_section(frame: pd.DataFrame, several: bool) -> list[tuple]:
    """The best fraction of the CPU matrix-product peak (CPU rows only)."""
    blocks: list[tuple] = []
    peak = best_peak_fraction(frame)
    for column in ("gflops", "gemm_gflops", "gemm_best_gflops"):
        if column in peak:
            peak[column] = peak[column].map(lambda v: _number(v, ".3g"))
    peak["peak_fraction"] = peak["peak_fraction"].map(lambda v: _number(v, ".1%"))
    if not several:
        peak = peak.drop(columns="machine")
    if not peak.empty:  # CPU rows only: a GPU-only run has none
        blocks += [("h", 3, "Best fraction of the CPU matrix-product peak")]
        if "gemm_best_gflops" in peak:
            blocks.append(
                (
                    "p",
                    "Each fraction divides by the peak beside it (gemm_gflops): the median rate "
                    "of the matrix products measured before each of the shape's rounds (runs "
                    "before schema 2: beside shapes of at least 0.25 GFLOP, else at the start). "
                    "A median, as the times are; the fastest product is gemm_best_gflops.",
                )
            )
        elif frame["gemm_gflops"].notna().any():  # runs from before the column: the start's
            blocks.append(
                (
                    "p",
                    "Each fraction divides by the peak beside it (gemm_gflops): this run took "
                    "the best of the matrix products measured beside its large shapes (runs "
                    "since take their median), the start-of-run peak for the rest.",
                )
            )
        blocks.append(("table", peak))
    return blocks


def _time_tables(runs: Runs) -> list[tuple]:
    """Median time per call, n by implementation, per dtype, d and mask."""
    blocks: list[tuple] = []
    for suffix, part in by_mask(runs):  # both masks (`--causal both`): a table for each
        mask = ", causal" if suffix else ""
        for dtype in part.dtypes():
            for d in sorted(part.frame.loc[part.frame["dtype"] == dtype, "d"].unique()):
                blocks += [
                    ("h", 3, f"Median time per call: {dtype}, d = {d}{mask}"),
                    ("table", time_table(part.frame, dtype, d)),
                ]

    return blocks


def _plot_section(figure_paths: dict[str, Path]) -> list[tuple]:
    """The figures, each with its caption."""
    blocks: list[tuple] = []
    blocks.append(("h", 2, "Plots"))
    for stem, path in figure_paths.items():
        caption = FIGURE_CAPTIONS[next(k for k in FIGURE_CAPTIONS if stem.startswith(k))]
        blocks.append(("img", path, f"{stem}: {caption}"))

    return blocks


def _trust_sections(runs: Runs, baseline: str | None) -> list[tuple]:
    """Unstable cases, what was not measured, and the cases without a valid timing."""
    blocks: list[tuple] = []
    frame, several = runs.frame, runs.several
    shaky = unstable_cases(frame, baseline).assign(
        median_s=lambda t: t["median_s"].map(format_seconds),
        median_width=lambda t: t["median_width"].map(lambda v: _number(v, ".0%")),
        ratio_width=lambda t: t["ratio_width"].map(lambda v: _number(v, ".0%")),
        round_spread=lambda t: t["round_spread"].map(lambda v: _number(v, ".2f")),
    )
    if not several:
        shaky = shaky.drop(columns="machine")
    if len(by_mask(runs)) < 2:
        shaky = shaky.drop(columns="causal")
    if not shaky.empty:
        blocks += [
            ("h", 2, "Unstable cases"),
            (
                "p",
                "Measured, but the 95% interval of their median (median_width: its span over "
                f"the median) or of their ratio to {baseline} (ratio_width) spans more than "
                f"{UNSTABLE_WIDTH:.0%}: the rounds, each in fresh processes, disagree. "
                "round_spread is the slowest round's median over the fastest's.",
            ),
            ("table", shaky),
        ]
    left_out = [
        f"{name}{f' ({label})' if several else ''}: {reason}"
        for label, meta in runs.metas.items()
        for name, reason in meta.get("not_measured", {}).items()
    ]
    if left_out:
        blocks += [("h", 2, "Not measured here"), ("ul", left_out)]
    problems = problem_cases(frame)
    if not several:
        problems = problems.drop(columns="machine")
    blocks.append(("h", 2, "Skipped, failed and disagreeing cases"))
    blocks.append(("table", problems) if not problems.empty else ("p", "None: every case is ok."))
    return blocks


def build_report(
    runs: Runs, figure_paths: dict[str, Path], title: str, baseline: str | None = None
) -> list[tuple]:
    """The report as blocks: ("h", level, text), ("p", text), ("ul", items),
    ("table", DataFrame), ("img", png path, caption)."""
    frame, several = runs.frame, runs.several
    blocks: list[tuple] = [("h", 1, title)]
    for label, meta in runs.metas.items():
        blocks += [("h", 2, f"Machine and settings ({label})"), ("table", machine_table(meta))]
    blocks += _variant_section(frame, several)
    blocks += [("h", 2, "Findings"), ("ul", findings(frame, several, baseline))]
    blocks += _fastest_section(frame, several)
    blocks += _ratio_section(frame, baseline)
    blocks += _scaling_sections(frame, several)
    blocks += _peak_section(frame, several)
    blocks += _time_tables(runs)
    blocks += _plot_section(figure_paths)
    blocks += _trust_sections(runs, baseline)
    return blocks


# --------------------------------------------------------------------------- rendering


def _md_cell(value) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def to_markdown(blocks: list[tuple]) -> str:
    out = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"{'#' * block[1]} {block[2]}")
        elif kind == "p":
            out.append(block[1])
        elif kind == "ul":
            out.append("\n".join(f"- {item}" for item in block[1]))
        elif kind == "table":
            table = block[1]
            lines = ["| " + " | ".join(_md_cell(c) for c in table.columns) + " |"]
            lines.append("|" + "---|" * len(table.columns))
            lines += [
                "| " + " | ".join(_md_cell(v) for v in row) + " |"
                for row in table.itertuples(index=False)
            ]
            out.append("\n".join(lines))
        elif kind == "img":
            out.append(f"![{block[2]}]({Path(block[1]).name})\n\n*{block[2]}*")
    return "\n\n".join(out) + "\n"


HTML_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1300px; margin: 2em auto; padding: 0 1em;
       color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f0f0f0; }
figure { margin: 1em 0 2em; }
img { max-width: 100%; border: 1px solid #ddd; }
figcaption { font-size: 0.9em; color: #555; }
"""


def to_html(blocks: list[tuple]) -> str:
    """One self-contained page: the PNG figures are embedded as base64 data URIs."""
    title = next((b[2] for b in blocks if b[0] == "h"), "attnbench report")
    out = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{HTML_STYLE}</style></head><body>",
    ]
    for block in blocks:
        kind = block[0]
        if kind == "h":
            out.append(f"<h{block[1]}>{html.escape(block[2])}</h{block[1]}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "ul":
            out.append("<ul>" + "".join(f"<li>{html.escape(i)}</li>" for i in block[1]) + "</ul>")
        elif kind == "table":
            out.append(block[1].to_html(index=False, border=0, escape=True, na_rep=""))
        elif kind == "img":
            data = base64.b64encode(Path(block[1]).read_bytes()).decode("ascii")
            out.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(block[2])}">'
                f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
            )
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def write_report(
    path: str | Path,
    baseline: str | None = None,
    n_fixed: int | None = None,
    out: str | Path | None = None,
) -> tuple[list[Path], list[str], list[str]]:
    """Draw the figures, then write report.md and report.html: into `out`, else into the run
    directory, unless git tracks it (a committed run), then into results/reports/<its name>;
    returns the two files, notes on figures not drawn, and the findings."""
    runs = load_runs([Path(path)])
    directory = Path(out) if out is not None else Path(path)
    if out is None and tracked_by_git(directory):
        directory = Path("results") / "reports" / Path(path).resolve().name
    directory.mkdir(parents=True, exist_ok=True)
    built, notes = plotting.figures(runs, baseline, n_fixed)
    baseline = baseline or default_baseline(runs.frame, runs.metas)
    pngs = {}
    for stem, fig in built.items():
        pngs[stem] = plotting.save_figure(fig, directory, stem)[0]
    title = f"attnbench report: {Path(path).resolve().name}"
    blocks = build_report(runs, pngs, title, baseline)
    if notes:
        blocks.insert(1, ("ul", notes))
    md, page = directory / "report.md", directory / "report.html"
    md.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks))
    return [md, page], notes, findings(runs.frame, runs.several, baseline)
