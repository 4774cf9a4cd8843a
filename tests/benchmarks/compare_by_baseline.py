"""How often `attnbench compare` would mark a case if it judged each case by its ratio to the
run's baseline, round by round (the two took turns in the same seconds), instead of by its
drift-normalised time; run on the output of reproducibility.sh:

    python tests/benchmarks/compare_by_baseline.py OUT_DIR [--baseline numpy] [--threshold 0.05]

Prints the cases marked in each pair of identical runs and in the planted run against each
unchanged one (the baseline itself is not judged here).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from harness.analysis import stats
from harness.results.rundir import RunDir
from harness.results.schema import CASE_COLUMNS


def round_ratios(run: Path, baseline: str) -> dict[tuple, list[float]]:
    """Each case's median over the baseline's, per round (the last record of each case)."""
    rows = {tuple(row[c] for c in CASE_COLUMNS): row for row in RunDir(run).rows()}
    impl = CASE_COLUMNS.index("impl")
    out = {}
    for key, row in rows.items():
        base = rows.get((*key[:impl], baseline, *key[impl + 1 :]))
        if key[impl] == baseline or base is None or "round_samples_s" not in row:
            continue
        pairs = zip(row["round_samples_s"], base.get("round_samples_s", []), strict=False)
        out[key] = [float(np.median(a) / np.median(b)) for a, b in pairs]
    return out


def marked(a: Path, b: Path, baseline: str, threshold: float) -> int:
    ratios_a, ratios_b = round_ratios(a, baseline), round_ratios(b, baseline)
    return sum(
        bool(stats.verdict(stats.change(ratios_a[key], ratios_b[key]), threshold))
        for key in ratios_a.keys() & ratios_b.keys()
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--baseline", default="numpy")
    parser.add_argument("--threshold", type=float, default=0.05)
    args = parser.parse_args()

    def judge(a: str, b: str) -> int:
        return marked(args.out / a, args.out / b, args.baseline, args.threshold)

    print("identical pairs:", [judge(f"pair{p}a", f"pair{p}b") for p in (1, 2, 3)])
    unchanged = [f"pair{p}{side}" for p in (1, 2, 3) for side in "ab"]
    print("planted against", ", ".join(unchanged) + ":", [judge(u, "planted") for u in unchanged])


if __name__ == "__main__":
    main()
