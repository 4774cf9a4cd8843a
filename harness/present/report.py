"""`attnbench report DIR`: report.md and a self-contained report.html with findings from the data.

The report is a list of blocks (headings, paragraphs, lists, tables, figures) built once from
the analysis (harness/analysis/) and rendered twice (harness/present/render.py).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness.analysis.findings import findings
from harness.analysis.ratios import default_baseline, format_ratio, paired_ratios
from harness.analysis.runs import FIT_POINTS, Runs, by_mask, format_seconds, load_runs
from harness.analysis.summaries import (
    UNSTABLE_WIDTH,
    best_peak_fraction,
    causal_speedups,
    crossovers,
    exponents,
    fastest_by_n,
    memory_bound,
    problem_cases,
    unstable_cases,
)
from harness.present.plots import figures, save_figure
from harness.present.render import to_html, to_markdown
from harness.present.report_tables import (
    bandwidth_table,
    machine_table,
    number_text,
    panel_as_setting,
    ratio_table,
    time_table,
    variant_table,
)
from harness.results.machine import tracked_by_git

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


def _variant_section(frame: pd.DataFrame, several: bool) -> list[tuple]:
    table = variant_table(frame, several)
    return [("h", 2, "Which code ran"), ("table", table)] if not table.empty else []


def _table_section(title: str, text: str, table) -> list[tuple]:
    """A heading, a paragraph on how to read the table, the table."""
    return [("h", 3, title), ("p", text), ("table", table)]


def _fastest_section(frame: pd.DataFrame, several: bool) -> list[tuple]:
    """The fastest implementation at each n, with its lead."""
    fastest = (
        fastest_by_n(frame)
        .assign(
            median_s=lambda t: t["median_s"].map(format_seconds),
            lead=lambda t: [
                "" if pd.isna(r.lead) else format_ratio(r.lead, r.lead_low, r.lead_high)
                for r in t.itertuples()
            ],
            runner_up=lambda t: t["runner_up"].fillna(""),
            # a disturbed case measured faster: the stable ones are not the fastest
            fastest=lambda t: [
                f"none named ({r.faster_unstable} faster but unstable)"
                if r.faster_unstable
                else r.fastest
                for r in t.itertuples()
            ],
        )
        .drop(columns=["lead_low", "lead_high", "faster_unstable"])
    )
    return _table_section(
        "Fastest implementation at each n",
        "Among the cases not flagged unstable (those are named in left_out_unstable). "
        "lead: the runner-up's time over the fastest's, from the rounds they shared, with "
        "its 95% interval; tied where that interval holds 1.",
        panel_as_setting(fastest, several),
    )


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
    """Crossovers, scaling exponents and memory-bound cases."""
    blocks: list[tuple] = []
    cross = crossovers(frame).assign(n_cross=lambda t: t["n_cross"].map(lambda v: f"{v:.0f}"))
    blocks += [
        ("h", 3, "Crossovers"),
        (
            "p",
            "Where the order of two implementations flips between two measured n; n_cross is "
            "where their log-log lines cross.",
        ),
        ("table", panel_as_setting(cross, several)) if not cross.empty else ("p", "No crossovers."),
    ]
    scaling = exponents(frame).assign(
        time_exponent=lambda t: t["time_exponent"].map(lambda v: number_text(v, ".2f")),
        memory_exponent=lambda t: t["memory_exponent"].map(lambda v: number_text(v, ".2f")),
    )
    blocks += _table_section(
        "Scaling exponents",
        f"Slope of log time (and log peak memory) against log n over the {FIT_POINTS} "
        "largest valid n: 2 is O(n²); memory 2 means the scores are materialised, 1 fused.",
        panel_as_setting(scaling, several),
    )
    bound = memory_bound(frame)
    if not bound.empty:
        blocks += _table_section(
            "Memory-bound cases: bytes per second",
            "Cases whose arithmetic intensity (FLOPs per byte moved: q, K and V read once "
            "per key/value head, the output written) is below the machine's balance (its "
            "matrix-product peak over the bandwidth of a streaming read of the same bytes, "
            "both measured alongside): their ceiling is the bandwidth. Each cell: GB/s "
            "and, in brackets, its fraction of that read's typical rate (each round's "
            "median read, the median over rounds; the fastest reads are in "
            "bandwidth_best_gbps).",
            panel_as_setting(bandwidth_table(bound), several),
        )
    return blocks


def _causal_section(frame: pd.DataFrame, several: bool) -> list[tuple]:
    """The causal mask's speed-up over the full one, where a run measured both."""
    masks = (
        causal_speedups(frame)
        .assign(
            full_s=lambda t: t["full_s"].map(format_seconds),
            causal_s=lambda t: t["causal_s"].map(format_seconds),
            speedup=lambda t: [
                format_ratio(*values)
                for values in t[["speedup", "speedup_low", "speedup_high"]].values
            ],
        )
        .drop(columns=["speedup_low", "speedup_high"])
    )
    if masks.empty:
        return []
    return _table_section(
        "Causal mask: speed-up over the full mask",
        "The same shape with and without the causal mask, taking turns in each round: the "
        "full call's median time over the causal one's (it skips about half the work), with "
        "its 95% interval from resampling whole rounds.",
        panel_as_setting(masks, several),
    )


def _peak_section(frame: pd.DataFrame, several: bool) -> list[tuple]:
    """The best fraction of the CPU matrix-product peak (CPU rows only)."""
    blocks: list[tuple] = []
    peak = best_peak_fraction(frame)
    for column in ("gflops", "gemm_gflops", "gemm_best_gflops"):
        if column in peak:
            peak[column] = peak[column].map(lambda v: number_text(v, ".3g"))
    peak["peak_fraction"] = peak["peak_fraction"].map(lambda v: number_text(v, ".1%"))
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
        median_width=lambda t: t["median_width"].map(lambda v: number_text(v, ".0%")),
        ratio_width=lambda t: t["ratio_width"].map(lambda v: number_text(v, ".0%")),
        round_spread=lambda t: t["round_spread"].map(lambda v: number_text(v, ".2f")),
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
    blocks += _causal_section(frame, several)
    blocks += _peak_section(frame, several)
    blocks += _time_tables(runs)
    blocks += _plot_section(figure_paths)
    blocks += _trust_sections(runs, baseline)
    return blocks


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
    built, notes = figures(runs, baseline, n_fixed)
    baseline = baseline or default_baseline(runs.frame, runs.metas)
    pngs = {}
    for stem, fig in built.items():
        pngs[stem] = save_figure(fig, directory, stem)[0]
    title = f"attnbench report: {Path(path).resolve().name}"
    blocks = build_report(runs, pngs, title, baseline)
    if notes:
        blocks.insert(1, ("ul", notes))
    md, page = directory / "report.md", directory / "report.html"
    md.write_text(to_markdown(blocks))
    page.write_text(to_html(blocks))
    return [md, page], notes, findings(runs.frame, runs.several, baseline)
