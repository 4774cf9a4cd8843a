"""`attnbench compare A B`'s output: the table and lines for the terminal, and the figure."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.compare import (
    BY_REFERENCE,
    FASTER,
    RAW_VALUE_ROUNDS,
    SLOWER,
    compare_tables,
    differences,
    require_rounds,
    same_machine,
    unshared,
)
from harness.analysis.ratios import default_baseline
from harness.analysis.runs import NotInRunError, format_seconds
from harness.present.figures.compare import compare_figure
from harness.present.plots import save_figure
from harness.present.tables import format_table
from harness.results.cases import SHAPE_FIELDS
from harness.results.rundir import load_run


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
    by_baseline = table["judged_by"].str.startswith("ratio to")
    by_reference = table["judged_by"].str.startswith(BY_REFERENCE)
    return (
        f"{text}. A case is marked only when the whole 95% interval of its B/A lies beyond "
        f"±{threshold:.1%}: {int(by_baseline.sum())} cases judged by their ratio to the "
        f"baseline measured in the same turns, {int(by_reference.sum())} "
        "by their drift-normalised time, with the raw B/A beyond the threshold too (its interval "
        f"below {RAW_VALUE_ROUNDS} rounds a side, else its value) and, for the baseline, beside "
        f"the others too; {only_a} cases only in A, "
        f"{only_b} only in B"
    )


def _interval(value, low, high) -> str:
    return "" if pd.isna(value) else f"{value:.3f} [{low:.3f}, {high:.3f}]"


def display_table(table: pd.DataFrame) -> list[dict]:
    """Rows for the terminal; batch, heads and causal shown only when they vary, n_q only when
    it is not n."""
    optional = [c for c in SHAPE_FIELDS if c not in ("n", "d", "dtype", "n_q")]
    varying = [c for c in optional if table[c].nunique() > 1]
    varying += ["n_q"] if (table["n_q"] != table["n"]).any() else []
    rows = []
    for _, row in table.iterrows():
        shown = {c: row[c] for c in ["impl", "n", "d", "dtype", *varying]}
        shown.update(
            A=format_seconds(row["median_a_s"]) if row["status_a"] == "ok" else row["status_a"],
            B=format_seconds(row["median_b_s"]) if row["status_b"] == "ok" else row["status_b"],
            **{
                "B/A raw [95%]": _interval(row["raw_ratio"], row["raw_low"], row["raw_high"]),
                "B/A judged [95%]": _interval(row["ratio"], row["ratio_low"], row["ratio_high"]),
            },
            by=row["judged_by"],
            change=row["change"].upper() if row["regression"] else row["change"],
        )
        rows.append(shown)
    return rows


def compare_baseline(
    a: pd.DataFrame, b: pd.DataFrame, metas: dict, chosen: str | None
) -> str | None:
    """The implementation the cases are judged against: the one asked for, else the runs'
    own; None when the runs share no implementation to use."""
    shared = set(a["impl"]) & set(b["impl"])
    if chosen is not None and chosen not in shared:
        raise NotInRunError(
            "baseline",
            f"{chosen!r} was not measured in both runs; choose one of {', '.join(sorted(shared))}",
        )
    baseline = chosen or default_baseline(a[a["impl"].isin(shared)], metas)
    return baseline if baseline in shared else None


def run_compare(
    dir_a: str | Path,
    dir_b: str | Path,
    threshold: float,
    out: str | Path | None = None,
    baseline: str | None = None,
) -> tuple[pd.DataFrame, list[str], list[Path]]:
    """Load both runs, compare them, save the figure; returns the table, lines to print, files."""
    (meta_a, a), (meta_b, b) = load_run(dir_a), load_run(dir_b)
    require_rounds(meta_a, dir_a)
    require_rounds(meta_b, dir_b)
    baseline = compare_baseline(a, b, {dir_a: meta_a, dir_b: meta_b}, baseline)
    table = compare_tables(a, b, threshold, same_machine(meta_a, meta_b), baseline)
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
