"""The analysis data model: the cases of one or several run directories as one table.

What the figures, the report and compare read: `load_runs` tags each run's rows with a machine
label and a workload in words (`Runs`), `valid_rows` keeps the valid timings, `fit_exponent`
fits a scaling exponent, `format_seconds` writes a time for display.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd

from harness.results.machine import cpu_label
from harness.results.rundir import RunDirError, load_run
from harness.results.schema import CUDA_TIMER

FIT_POINTS = 3  # the scaling exponent is fitted over this many largest measured sizes
MACHINE_LINESTYLES = ("-", "--", ":", "-.")


class NotInRunError(Exception):
    """A baseline or n asked for that the runs do not have; `setting` names which (baseline,
    n_fixed), so that the command can name its option."""

    def __init__(self, setting: str, message: str):
        super().__init__(message)
        self.setting = setting


def format_seconds(value) -> str:
    """Seconds for display, to 3 significant digits in the unit that suits (files keep all)."""
    if value is None or pd.isna(value):
        return ""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return "0 s" if value == 0 else f"{value / 1e-9:.3g} ns"


def fit_exponent(n, values, points: int = FIT_POINTS) -> float | None:
    """Slope of log(value) against log(n) over the `points` largest n: the scaling exponent.

    None with fewer than two sizes or a non-positive value (a log needs positive numbers).
    """
    series = pd.Series(np.asarray(values, dtype=float), index=np.asarray(n, dtype=float))
    series = series[~series.index.duplicated(keep="last")].sort_index().iloc[-points:]
    if len(series) < 2 or (series <= 0).any() or series.isna().any():
        return None
    slope, _ = np.polyfit(np.log(series.index.to_numpy()), np.log(series.to_numpy()), 1)
    return float(slope)


@dataclass(frozen=True)
class Runs:
    """The cases of one or several runs, each row tagged with its run's machine label."""

    frame: pd.DataFrame
    metas: dict[str, dict]  # machine label -> meta.json

    @property
    def several(self) -> bool:
        return len(self.metas) > 1

    def linestyle(self, machine: str) -> str:
        return MACHINE_LINESTYLES[list(self.metas).index(machine) % len(MACHINE_LINESTYLES)]

    def label(self, impl: str, machine: str) -> str:
        return f"{impl} @ {machine}" if self.several else impl

    def dtypes(self) -> list[str]:
        return sorted(self.frame["dtype"].unique())

    def describe(self) -> str:
        """Machine, CPU and threads of every run (and the GPU, where rows ran on one): titles."""
        parts = []
        for label, meta in self.metas.items():
            cpu = cpu_label(meta.get("machine", {}))
            threads = meta.get("threads", "?")
            host = f"{cpu}, {threads} thread{'' if threads == 1 else 's'}"
            gpus = [gpu.get("name", "GPU") for gpu in meta.get("machine", {}).get("gpus") or []]
            rows = self.frame[self.frame["machine"] == label]
            if gpus and (rows["timer"] == CUDA_TIMER).any():
                host = f"{', '.join(gpus)} (host: {host})"
            parts.append(f"{label}: {host}")
        return "; ".join(parts)


def make_runs(tables: list[tuple[dict, pd.DataFrame]], names: list[str]) -> Runs:
    """Tag each run's rows with a machine label: meta.json's machine id, followed by the run's
    name (its directory) where two runs share a machine."""
    ids = [meta.get("machine", {}).get("id", "machine") for meta, _ in tables]
    labels = [
        f"{mid} ({name})" if ids.count(mid) > 1 else mid
        for mid, name in zip(ids, names, strict=True)
    ]
    frames = [
        table.assign(machine=label, workload=workloads(table, meta))
        for (meta, table), label in zip(tables, labels, strict=True)
    ]
    frame = pd.concat(frames, ignore_index=True)
    return Runs(frame, {label: meta for (meta, _), label in zip(tables, labels, strict=True)})


def workloads(table: pd.DataFrame, meta: dict) -> list[str]:
    """Each row's workload beyond its n, d and dtype, in words ("" for one head, batch 1, as
    many queries as keys): the cases of one curve share it. A token budget (--tokens) makes the
    batch part of the curve: it is named, not each batch."""
    tokens = meta.get("settings", {}).get("tokens") or 0
    words = []
    for row in table.itertuples():
        parts = [f"{tokens} tokens"] if tokens else []
        if not tokens and row.batch != 1:
            parts.append(f"batch {row.batch}")
        if row.heads != 1 or row.kv_heads != row.heads:
            parts.append(f"heads {row.heads}")
        if row.kv_heads != row.heads:
            parts.append(f"kv heads {row.kv_heads}")
        if row.n_q != row.n:
            parts.append(f"n_q {row.n_q}")
        words.append(", ".join(parts))
    return words


def load_runs(paths: list[str | Path]) -> Runs:
    tables = [load_run(path) for path in paths]
    for path, (_, table) in zip(paths, tables, strict=True):
        if table.empty:
            raise RunDirError(f"{path}: the run has no results yet (results.jsonl is empty)")
    return make_runs(tables, [Path(path).name for path in paths])


def band_s(row: pd.Series) -> tuple[float, float]:
    """The band drawn around a median: its 95% interval from the rounds where the run has it,
    else (older runs) the samples' interquartile range."""
    low, high = row.get("median_low_s"), row.get("median_high_s")
    if low is not None and high is not None and pd.notna(low) and pd.notna(high):
        return float(low), float(high)
    samples = row.get("samples_s")
    if isinstance(samples, list) and len(samples) >= 2:
        q25, q75 = np.percentile(samples, [25, 75])
        return float(q25), float(q75)
    half = (row["iqr_s"] if pd.notna(row.get("iqr_s")) else 0.0) / 2
    return row["median_s"] - half, row["median_s"] + half


def valid_rows(rows: pd.DataFrame, column: str = "median_s") -> pd.DataFrame:
    """The valid measurements of a series, by n; a disagreeing row is never one of them."""
    ok = rows[(rows["status"] == "ok") & rows[column].notna()]
    return ok.sort_values(["n", "d"])


def by_mask(runs: Runs) -> list[tuple[str, Runs]]:
    """The runs whole, or, where they hold both masks (`--causal both`), each mask apart: a
    line per implementation cannot hold two times at one n. Causal figures get "_causal"."""
    causal = runs.frame["causal"].astype(bool)
    if causal.nunique() < 2:
        return [("", runs)]
    return [
        ("", replace(runs, frame=runs.frame[~causal])),
        ("_causal", replace(runs, frame=runs.frame[causal])),
    ]


def decode_only(frame: pd.DataFrame) -> bool:
    """Every case has a fixed query length other than n: n is the KV cache (decode)."""
    return bool((frame["n_q"] != frame["n"]).all())
