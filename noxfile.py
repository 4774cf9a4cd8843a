"""nox sessions: `tests` (the default suite: CUDA simulator and PTX included), `lint`, and the
benchmark sessions `benchmark` (the default sweep, then its report, then the pytest-benchmark
suite), `benchmark_peers` (the same with torch, for the torch_sdpa yardstick) and
`benchmark_gpu` (numba_cuda against torch on a CUDA GPU).

Options after `--` go to `attnbench run`, e.g. `nox -s benchmark -- --quick`.
"""

import os

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

# The CPU build of torch the published figures were measured with (see docs/PERFORMANCE.md).
TORCH = "torch==2.13.0"


# uv where it is installed (`pip install 'nox[uv]'`): it installs the tests' environment in
# seconds where pip takes half a minute. Not for the benchmark sessions: uv does not read pip's
# configuration, which may point at a local build of torch (the CPU one the figures were
# measured with).
@nox.session(venv_backend="uv|virtualenv")
def tests(session: nox.Session) -> None:
    """pytest over every implementation; numba_cuda in the simulator when there is no GPU.

    One pytest process (pytest-xdist) per core and one more: the simulator's threads and the
    sweeps' worker processes leave the cores idle part of the time (2 cores: 1.45 of them busy
    with 2 processes, 1.69 with 3; 258 -> 204 s). With the line coverage of harness/ and impls/
    (code that runs only in worker processes or compiled by numba counts as missed: the figure
    is a floor).
    """
    session.install("-e", ".[dev,cuda]")
    coverage = ["--cov=harness", "--cov=impls", "--cov-report=term:skip-covered"]
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    processes = (cores or 1) + 1
    session.run("pytest", "-n", str(processes), *coverage, *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def benchmark(session: nox.Session) -> None:
    """The default sweep of every available implementation."""
    session.install("-e", ".[dev]")
    sweep_and_report(session)


@nox.session
def benchmark_peers(session: nox.Session) -> None:
    """The default sweep with torch installed, so torch_sdpa is measured beside the others."""
    session.install("-e", ".[dev]", TORCH)
    sweep_and_report(session)


@nox.session
def benchmark_gpu(session: nox.Session) -> None:
    """numba_cuda against torch_sdpa_cuda on this machine's GPU, as in results/gpu-h200/: one
    head at d = 32, 64, 128, then B = 4 x H = 16 heads at d = 128.

    Needs an NVIDIA GPU and a torch built with CUDA (PyPI's Linux wheels are); without them
    both cases are recorded as skipped, with the reason.
    """
    session.install("-e", ".[dev,cuda,peers]")
    impls = ["--impl", "numba_cuda,torch_sdpa_cuda", "--target", "0.3"]
    lengths = ["--n", "1024,2048,4096,8192,16384"]
    # One head, every width; then a realistic batch x heads (B = 4, H = 16) at d = 128, where
    # the row tiles alone fill the GPU and the tensor-core kernel does not need key splits.
    sweeps = [["--d", "32,64,128"], ["--batch", "4", "--heads", "16", "--d", "128"]]
    for sweep in sweeps:
        session.run("attnbench", "run", *impls, *lengths, *sweep, *session.posargs)
        session.run("attnbench", "report", "results/latest", "--baseline", "torch_sdpa_cuda")


def sweep_and_report(session: nox.Session) -> None:
    session.run("attnbench", "run", *session.posargs)  # points results/latest at the run
    # pytest-benchmark, one process per available implementation (shared thread pools slow
    # each other); its tables go to a file in the run directory, not over the report.
    names = session.run(
        "python",
        "-c",
        "import impls; print(' '.join(i.name for i in impls.registry().values() if i.available))",
        silent=True,
    ).split()
    tables = []
    for name in names:
        tables.append(
            session.run(
                "pytest",
                "-o",
                "addopts=",
                "--benchmark-only",
                f"--benchmark-save={name}",
                "--benchmark-storage=results/pytest-benchmark",
                "tests/benchmarks",
                env={"ATTNBENCH_BENCH_IMPL": name},
                silent=True,
            )
        )
    with open("results/latest/pytest-benchmark.txt", "w") as out:
        out.write("\n".join(tables))
    session.log("pytest-benchmark tables: results/latest/pytest-benchmark.txt")
    session.run("attnbench", "report", "results/latest")  # last: its path and headline findings
