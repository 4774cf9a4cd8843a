"""The report's tables: the machine and settings, which code ran, times and ratios n by
implementation, memory-bound cases; panel columns folded into one readable column.
"""

from __future__ import annotations

import pandas as pd

from harness.analysis.ratios import format_ratio
from harness.analysis.runs import format_seconds
from harness.analysis.summaries import PANEL, panel_name


def _bytes(value) -> str:
    if value is None or pd.isna(value):
        return ""
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{int(value)} B"


def number_text(value, spec: str = ".3g", suffix: str = "") -> str:
    """A number for a table cell; empty where there is none."""
    return "" if value is None or pd.isna(value) else f"{value:{spec}}{suffix}"


def panel_as_setting(table: pd.DataFrame, several: bool) -> pd.DataFrame:
    """Panel columns folded into one readable column; the machine only when there are several."""
    if table.empty:
        return table
    panel = table.apply(lambda row: panel_name(row, several), axis=1)
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


def machine_table(meta: dict) -> pd.DataFrame:
    machine, settings = meta.get("machine", {}), meta.get("settings", {})
    blas = "; ".join(
        f"{pool.get('internal_api')} {pool.get('version')} ({pool.get('num_threads')} threads"
        + (f", {pool['architecture']} kernels)" if pool.get("architecture") else ")")
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
        "machine": f"{machine.get('id')} — {machine.get('cpu')} ("
        + "; ".join(str(v) for v in (machine.get("arch"), machine.get("cpu_signature")) if v)
        + ")",
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
        "environment": ", ".join(f"{k}={v}" for k, v in meta.get("environment", {}).items())
        or "no variable that changes the libraries' code or threads",
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
