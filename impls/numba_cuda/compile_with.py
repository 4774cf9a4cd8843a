"""What the kernel generators write their kernels with: numba-cuda's scalar types and its
device-function decorator, or, for the simulator, their plain equivalents. In the simulator a
kernel is Python run by a thread per GPU thread: numba's scalar types cost about 20 us a call
there (they return NumPy's), and a device function's wrapper only swaps in the fake `cuda`
module that the running kernel already has; the compiled kernels are unchanged by this."""

from __future__ import annotations

import numpy as np


def scalar_types(simulated: bool, *names: str) -> tuple:
    """The scalar types of these names (float32, uint64, ...): numba's, or NumPy's in the
    simulator."""
    import numba

    source = np if simulated else numba
    return tuple(getattr(source, name) for name in names)


def device_functions(simulated: bool):
    """The decorator of a kernel's helpers: inlined into the kernel by numba-cuda, or, in the
    simulator, the functions as written."""
    if simulated:
        return lambda fn: fn
    from numba import cuda

    return cuda.jit(device=True, inline="always")
