"""What reproducibility.sh's runs say: do the ratios of identical runs agree, and what does
`attnbench compare` mark, judging cases by their ratio to the baseline and by their
drift-normalised time alone? Run from the repository root:

    python tests/benchmarks/reproducibility_summary.py OUT_DIR [--baseline numpy]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from harness.analysis.compare import FASTER, SLOWER, compare_tables
from harness.results.rundir import RunDir

PAIRS = (1, 2, 3)
UNCHANGED = [f"pair{p}{side}" for p in PAIRS for side in "ab"]
AGREE = 0.05  # the target: per-shape ratios within 5%
OVER_S = 1e-3  # ... in the shapes whose baseline takes over 1 ms


def ratios(table: pd.DataFrame, baseline: str) -> pd.DataFrame:
    """Each shape's ratio to the baseline, and the baseline's median time."""
    shape = ["n", "d", "dtype"]
    base = table[table["impl"] == baseline].set_index(shape)["median_s"]
    other = table[(table["impl"] != baseline) & (table["status"] == "ok")].set_index(shape)
    width = (other["ratio_high"] - other["ratio_low"]) / other["ratio"]
    return pd.DataFrame({"ratio": other["ratio"], "width": width, "baseline_s": base}).dropna()


def agreement(a: pd.DataFrame, b: pd.DataFrame, baseline: str) -> str:
    ra, rb = ratios(a, baseline), ratios(b, baseline)
    apart = (rb["ratio"] / ra["ratio"] - 1).abs()
    slow = ra["baseline_s"] > OVER_S
    return (
        f"{int((apart[slow] <= AGREE).sum())} of {int(slow.sum())} over 1 ms "
        f"(all: {int((apart <= AGREE).sum())} of {len(apart)}, worst {apart.max():.1%}); "
        f"median width of a ratio's interval {ra['width'].median():.0%}, "
        f"{rb['width'].median():.0%}"
    )


def marked(table: pd.DataFrame, impl: str | None = None) -> int:
    rows = table if impl is None else table[table["impl"] == impl]
    return int(rows["change"].isin([SLOWER, FASTER]).sum())


def print_marks(tables: dict, baseline: str | None, threshold: float, unchanged: str) -> None:
    def compare(a: str, b: str) -> pd.DataFrame:
        return compare_tables(tables[a], tables[b], threshold, baseline=baseline)

    identical = [marked(compare(f"pair{p}a", f"pair{p}b")) for p in PAIRS]
    planted = [compare(u, "planted") for u in UNCHANGED]
    print(f"  identical pairs, cases marked: {identical} of {len(compare('pair1a', 'pair1b'))}")
    print(
        f"  planted against {', '.join(UNCHANGED)}: candidate marked "
        f"{[marked(t, 'candidate') for t in planted]} of "
        f"{int((planted[0]['impl'] == 'candidate').sum())}; "
        f"{unchanged} marked {sum(marked(t, unchanged) for t in planted)}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--baseline", default="numpy")
    parser.add_argument("--threshold", type=float, default=0.05)
    args = parser.parse_args()
    tables = {name: RunDir(args.out / name).table() for name in [*UNCHANGED, "planted"]}
    for p in PAIRS:
        a, b = tables[f"pair{p}a"], tables[f"pair{p}b"]
        print(f"pair {p}: ratios within {AGREE:.0%}: {agreement(a, b, args.baseline)}")
    for judged, baseline in (("ratio to the baseline", args.baseline), ("drift-normalised", None)):
        print(f"compare, judged by the {judged}:")
        print_marks(tables, baseline, args.threshold, args.baseline)


if __name__ == "__main__":
    main()
