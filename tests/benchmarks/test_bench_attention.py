"""pytest-benchmark suite over the same implementations on a small grid.

Skipped in the test session (`--benchmark-skip` in pyproject's addopts); `nox -s benchmark` runs
it with `--benchmark-only` and saves JSON into results/pytest-benchmark/, so that
`pytest-benchmark compare` works. It reuses the interface (prepare outside the timer, so
compilation is excluded), the sweep's inputs, thread settings and calls-per-round rule. nox runs
it once per implementation (ATTNBENCH_BENCH_IMPL), so that thread pools never share a process.
"""

import os
import time

import pytest

import impls
from harness.results.cases import Case
from harness.results.machine import usable_cores
from harness.worker import checking
from harness.worker.inputs import case_inputs
from harness.worker.threads import set_threads
from harness.worker.timing import SamplingPlan, inner_repeats

GRID = [(n, d) for n in (128, 512, 1024) for d in (64,)]
PLAN = SamplingPlan()
# `nox -s benchmark` runs one implementation per process (ATTNBENCH_BENCH_IMPL=name).
NAMES = (
    [os.environ["ATTNBENCH_BENCH_IMPL"]] if "ATTNBENCH_BENCH_IMPL" in os.environ else impls.names()
)


@pytest.fixture(scope="module", autouse=True)
def threads():
    set_threads(usable_cores())


@pytest.mark.parametrize("n, d", GRID, ids=[f"n{n}-d{d}" for n, d in GRID])
@pytest.mark.parametrize("name", NAMES)
def test_attention(benchmark, name, n, d):
    impl = impls.get(name)
    reason = impl.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{name} is not available here: {reason}")
    if impl.device == "cuda" and os.environ.get("NUMBA_ENABLE_CUDASIM") == "1":
        pytest.skip("numba_cuda runs in the CUDA simulator here: correctness only, nothing to time")
    if name == "naive" and n > 128:
        pytest.skip("naive loops take seconds per call past n = 128")
    case = Case(name, n, d)
    args = impls.check_attention_args(*case_inputs(case))
    call = impl.prepare_checked(args)  # compilation and copies stay outside the timer
    call.run()
    start = time.perf_counter()
    call.run()
    warm_call_s = time.perf_counter() - start
    benchmark.group = f"n={n} d={d} float32"
    benchmark.extra_info.update(flops=case.flops, impl=name, n=n, d=d, dtype="float32")
    benchmark.pedantic(
        call.run,
        rounds=PLAN.min_samples * 2,
        iterations=inner_repeats(warm_call_s, PLAN.min_sample_s),
        warmup_rounds=1,
    )
    assert checking.compare(call.fetch(), args).ok
