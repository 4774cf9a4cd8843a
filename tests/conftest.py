"""Test-session set-up: simulate CUDA when there is no GPU, before numba is imported anywhere."""

import os
import shutil
from pathlib import Path

if "NUMBA_ENABLE_CUDASIM" not in os.environ and shutil.which("nvidia-smi") is None:
    # No GPU here: numba_cuda's kernels run in numba-cuda's simulator (small shapes only).
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import pytest

import impls


def available_or_skip(name: str) -> impls.Implementation:
    impl = impls.get(name)
    reason = impl.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{name} is not available here: {reason}")
    return impl


def simulated(impl: impls.Implementation) -> bool:
    """True for a GPU implementation running in a simulator: correct but slow, so small shapes."""
    return impl.simulated()


def simulator_limit_or_skip(impl: impls.Implementation, n: int, lead_size: int = 1) -> None:
    """Skip shapes too big for a simulated GPU; the implementation says how big (its
    SIMULATOR_MAX_N, 64 if it says nothing)."""
    if not simulated(impl):
        return
    max_n = impl.simulator_max_n or 64
    if n > max_n or lead_size > 2:
        pytest.skip(
            f"{impl.name} is simulated: n <= {max_n} and batch x heads <= 2 here "
            "(its own tests cover the tails of its tiles; a GPU runs every shape)"
        )


SMALL_PEAK_SIZE, SMALL_STREAM_BYTES = 128, 1 << 20


def use_small_reference_workloads(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sweeps in tests probe the machine with small products and reads: the rule is the same,
    the seconds are not worth spending."""
    from harness.sweep import probes

    monkeypatch.setattr(probes, "PEAK_SIZE", SMALL_PEAK_SIZE)
    monkeypatch.setattr(probes, "STREAM_BYTES", SMALL_STREAM_BYTES)


@pytest.fixture(autouse=True)
def small_reference_workloads(monkeypatch):
    use_small_reference_workloads(monkeypatch)


@pytest.fixture
def figures_not_drawn(monkeypatch):
    """For tests of a report's text and where it goes: each figure is built but saved as an
    empty file, not drawn (drawing is four fifths of a report's time). The tests of the
    figures and of the HTML page draw them."""
    from harness.present import report

    def empty_files(fig, out_dir, stem):
        paths = [Path(out_dir) / f"{stem}.png", Path(out_dir) / f"{stem}.svg"]
        for path in paths:
            path.touch()
        return paths

    monkeypatch.setattr(report, "save_figure", empty_files)


@pytest.fixture(params=impls.names())
def impl(request) -> impls.Implementation:
    """Every registered implementation; unavailable ones skip with their reason."""
    return available_or_skip(request.param)


WARM_NUMBA_PARALLEL = """
import sys
import numpy as np
import impls

impl = impls.get("numba_parallel")
if impl.unavailable_reason() is None:
    x = np.ones((1, 1, 8, 8), sys.argv[1])
    impl.attention(x, x, x, causal=True)  # the tiled kernel (a few unmasked rows: decode)
    impl.attention(x[:, :, :1], x, x)  # the decode kernel
"""


def pytest_configure(config):
    """Compile numba_parallel's kernels into its disk cache, a process per dtype, before the
    test processes start: otherwise each of them (and each sweep's workers) compiles the same
    kernels at once, about 40 s of CPU apiece on a cold checkout."""
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: its controller did this
        return
    import subprocess
    import sys

    warming = [
        subprocess.Popen([sys.executable, "-c", WARM_NUMBA_PARALLEL, dtype])
        for dtype in ("float32", "float64")
    ]
    for process in warming:
        process.wait()


def pytest_collection_modifyitems(items):
    """The tests of the CUDA kernels' PTX first: compiling it is a minute of processes of its
    own, which would otherwise be the last thing a parallel run waits for."""
    items.sort(key=lambda item: "compiled_ptx" not in getattr(item, "fixturenames", ()))
