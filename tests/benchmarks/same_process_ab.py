"""Two versions of numba_parallel in one process, their calls alternating: a kernel change seen
apart from the machine's drift.

On a shared VM two processes measured a minute apart differ by 10-40%; one kernel against
itself this way, call against call, within 1-4% (up to 9% for decode whose keys and values
about fill the L3; docs/MEASUREMENT.md, and docs/kernels/numba_parallel.md for the figures
tuning choices were made on). Each side is an `impls/` tree (a checkout,
a `git worktree` of another commit), imported under a name of its own:

    git worktree add ../before HEAD~1
    python tests/benchmarks/same_process_ab.py ../before/impls impls --workload decode
    python tests/benchmarks/same_process_ab.py ../before/impls impls --dtype float64 --n 1024,4096

Prints, per n, the time of B over A per pair of calls (median and quartiles), and its median
over the pairs that ran A first and over those that ran B first: trust what both show.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def import_copy(tree: Path, name: str, into: Path):
    """tree (an impls/ folder) as the package `name`, its own imports renamed to match."""
    target = into / name
    shutil.copytree(tree, target, ignore=shutil.ignore_patterns("__pycache__"))
    for path in target.rglob("*.py"):
        text = re.sub(r"\bimpls\.numba_parallel\b", f"{name}.numba_parallel", path.read_text())
        path.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module(f"{name}.numba_parallel")


def inputs(workload: str, n: int, d: int, dtype: str, rng) -> tuple:
    """decode: 32 query heads sharing 8, one query each, n keys; prefill: B = H = 1, n x n."""
    heads, kv_heads, n_q = (32, 8, 1) if workload == "decode" else (1, 1, n)
    q = rng.standard_normal((1, heads, n_q, d)).astype(dtype)
    k, v = (rng.standard_normal((1, kv_heads, n, d)).astype(dtype) for _ in range(2))
    return q, k, v


def pairs(sides: dict, states: dict, count: int, repeats: int) -> tuple[np.ndarray, np.ndarray]:
    """count pairs of timed calls, A first in the even pairs and B first in the odd ones: the
    time of B over A per pair, and which pairs had A first."""
    ratios, a_first = [], []
    for index in range(count):
        order = ("a", "b") if index % 2 == 0 else ("b", "a")
        seconds = {}
        for label in order:
            module, state = sides[label], states[label]
            start = time.perf_counter()
            for _ in range(repeats):
                module.run(state)
            seconds[label] = (time.perf_counter() - start) / repeats
        ratios.append(seconds["b"] / seconds["a"])
        a_first.append(index % 2 == 0)
    return np.array(ratios), np.array(a_first)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("a", type=Path, help="impls/ tree of version A")
    parser.add_argument("b", type=Path, help="impls/ tree of version B")
    parser.add_argument("--workload", choices=("decode", "prefill"), default="prefill")
    parser.add_argument("--n", default="1024,4096")
    parser.add_argument("--d", type=int, default=128)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--causal", action="store_true")
    parser.add_argument("--pairs", type=int, default=40)
    options = parser.parse_args()

    sys.path.insert(0, str(REPO))
    import impls

    with tempfile.TemporaryDirectory() as folder:
        sides = {
            label: import_copy(tree.resolve(), f"impls_{label}", Path(folder) / label)
            for label, tree in (("a", options.a), ("b", options.b))
        }
        rng = np.random.default_rng(0)
        for n in map(int, options.n.split(",")):
            q, k, v = inputs(options.workload, n, options.d, options.dtype, rng)
            args = impls.check_attention_args(q, k, v, causal=options.causal)
            states = {label: module.prepare(args) for label, module in sides.items()}
            outputs = []
            for label, module in sides.items():
                module.run(states[label])
                outputs.append(module.fetch(states[label]).copy())
            np.testing.assert_allclose(*outputs, rtol=1e-3, atol=1e-4)  # the same attention
            decode = options.workload == "decode"
            repeats = max(3, 100_000 // n) if decode else max(1, 2**23 // n**2)  # 1 ms or more
            for label, module in sides.items():  # warm: caches, pages, the threads' pool
                for _ in range(3 * repeats):
                    module.run(states[label])
            ratio, a_first = pairs(sides, states, options.pairs, repeats)
            q1, median, q3 = np.percentile(ratio, [25, 50, 75])
            # What each side chose for itself (decode's prefetch is timed in prepare): a ratio
            # between two different choices says little about the code.
            variants = {label: module.variant(states[label]) for label, module in sides.items()}
            chosen = (
                ""
                if len(set(variants.values())) == 1
                else f"; A ran {variants['a']!r}, B {variants['b']!r}"
            )
            print(
                f"n={n}: time B/A {median:.3f} [{q1:.3f}, {q3:.3f}] "
                f"(A first {np.median(ratio[a_first]):.3f}, B first "
                f"{np.median(ratio[~a_first]):.3f}){chosen}",
                flush=True,
            )


if __name__ == "__main__":
    main()
