"""The harness's median against a plain loop over `impls.get(name).attention(q, k, v)`.

    python tests/benchmarks/whole_call.py [--n 2048] [--d 64] [--threads 2] [NAME ...]

For each implementation: a plain loop in a fresh process, then `attnbench run` of the same case,
then the plain loop again (the machine's speed moves between minutes: compare the harness with
the loop nearest to it). The timed region is the whole call when the ratio is near 1.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOOP = """
import json, sys, time
import numpy as np
import impls
from harness.worker.inputs import make_qkv
from harness.worker.threads import set_threads

name, n, d, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
set_threads(threads)
q, k, v = make_qkv(n, n, d, lead=(1, 1), dtype="float32")
impl = impls.get(name)
impl.attention(q, k, v)  # compile, or load the compiled code
times, start = [], time.perf_counter()
while len(times) < 7 or time.perf_counter() - start < 2.0:
    t = time.perf_counter()
    impl.attention(q, k, v)
    times.append(time.perf_counter() - t)
print(json.dumps(float(np.median(times))))
"""


def plain_loop_s(name: str, n: int, d: int, threads: int) -> float:
    done = subprocess.run(
        [sys.executable, "-c", LOOP, name, str(n), str(d), str(threads)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return json.loads(done.stdout.strip().splitlines()[-1])


def harness_s(name: str, n: int, d: int, threads: int) -> float:
    import pandas as pd

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        argv = ["run", "--impl", name, "--n", str(n), "--d", str(d), "--threads", str(threads)]
        subprocess.run(
            [sys.executable, "-m", "harness", *argv, "--out", str(out)],
            capture_output=True, check=True,
        )  # fmt: skip
        return float(pd.read_csv(out / "results.csv")["median_s"].iloc[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", default=["numpy", "numba_parallel", "numpy_textbook"])
    parser.add_argument("--n", type=int, default=2048)
    parser.add_argument("--d", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2)
    ns = parser.parse_args()
    print("implementation  loop before  harness  loop after  harness/nearest loop")
    for name in ns.names:
        before = plain_loop_s(name, ns.n, ns.d, ns.threads)
        timed = harness_s(name, ns.n, ns.d, ns.threads)
        after = plain_loop_s(name, ns.n, ns.d, ns.threads)
        nearest = min((before, after), key=lambda loop: abs(timed / loop - 1))
        print(
            f"{name:15s} {before * 1e3:9.3f} ms {timed * 1e3:7.3f} ms {after * 1e3:8.3f} ms"
            f"  {timed / nearest:.3f}",
            flush=True,
        )
        time.sleep(1)


if __name__ == "__main__":
    main()
