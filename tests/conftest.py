"""Test-session set-up: simulate CUDA when there is no GPU, before numba is imported anywhere."""

import os
import shutil

if "NUMBA_ENABLE_CUDASIM" not in os.environ and shutil.which("nvidia-smi") is None:
    # No GPU here: numba_cuda's kernels run in numba-cuda's simulator (small shapes only).
    os.environ["NUMBA_ENABLE_CUDASIM"] = "1"

import pytest  # noqa: E402

import impls  # noqa: E402


def available_or_skip(name: str) -> impls.Implementation:
    impl = impls.get(name)
    reason = impl.unavailable_reason()
    if reason is not None:
        pytest.skip(f"{name} is not available here: {reason}")
    return impl


@pytest.fixture(params=impls.names())
def impl(request) -> impls.Implementation:
    """Every registered implementation; unavailable ones skip with their reason."""
    return available_or_skip(request.param)
