"""Tables that summarise runs: the fastest implementation at each n, crossovers, scaling exponents,
how near each limit, the causal mask's speed-up, and the cases not to build on.

Pure functions of the results table, so they can be tested on synthetic runs; the findings and
the report read them.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd

from harness.analysis import stats
from harness.analysis.ratios import SHAPE, paired_ratios, round_values
from harness.analysis.runs import FIT_POINTS, fit_exponent, valid_rows
from harness.results.schema import CUDA_TIMER

UNSTABLE_WIDTH = 0.2  # a stated figure whose interval spans more than 20% of it

PANEL = ["machine", "dtype", "d", "workload", "causal"]  # cases that differ only in n, impl


def panel_name(row, several: bool) -> str:
    """A panel in words, for sentences and tables: dtype, d, workload, mask (and the machine,
    when there are several)."""
    text = f"{row['dtype']}, d={row['d']}"
    if row["workload"]:
        text += f", {row['workload']}"
    if row.get("causal", False):
        text += ", causal"
    return f"{text} @ {row['machine']}" if several else text


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
    about 2x is the aim. The two masks took turns within each round, so the speed-up's
    interval resamples whole rounds, the same rounds for both, as a ratio to the baseline's."""
    ok = valid_rows(frame).assign(causal=lambda t: t["causal"].astype(bool))
    keys = ["machine", "impl", "dtype", "d", "workload", "n"]
    ok = ok.assign(round_values=[round_values(row) for _, row in ok.iterrows()])
    full = ok[~ok["causal"]].set_index(keys)[["median_s", "round_values"]]
    causal = ok[ok["causal"]].set_index(keys)[["median_s", "round_values"]]
    both = full.merge(causal, left_index=True, right_index=True, suffixes=("_full", "_causal"))
    rows = []
    for key, row in both.iterrows():
        full_rounds, causal_rounds = row["round_values_full"], row["round_values_causal"]
        speedup = stats.Interval(row["median_s_full"] / row["median_s_causal"], math.nan, math.nan)
        if full_rounds and causal_rounds and len(full_rounds) == len(causal_rounds):
            speedup = stats.paired_ratio(full_rounds, causal_rounds)
        rows.append(
            {
                **dict(zip(keys, key, strict=True)),
                "full_s": row["median_s_full"],
                "causal_s": row["median_s_causal"],
                "speedup": speedup.value,
                "speedup_low": speedup.low,
                "speedup_high": speedup.high,
            }
        )
    columns = [*keys, "full_s", "causal_s", "speedup", "speedup_low", "speedup_high"]
    table = pd.DataFrame(rows, columns=columns)
    return table.sort_values(["machine", "dtype", "d", "impl", "n"]).reset_index(drop=True)


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
