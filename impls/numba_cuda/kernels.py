"""The compilation of numba_cuda's kernels (row_kernel, thread_tile_kernel, mma_kernel, merge),
each a plain Python function of its tile config whose sizes are closure constants: once per
variant and process, or to PTX for the tests."""

from __future__ import annotations

import importlib.util
import os
from dataclasses import replace

from impls.numba_cuda import merge, mma_kernel, row_kernel, thread_tile_kernel
from impls.numba_cuda.plan import (
    DTYPES,
    MMA_PASSES,
    MMA_WIDTHS,
    ROW_CHOICES,
    WIDTHS,
    MmaConfig,
    ThreadTileConfig,
    TileConfig,
    kernel_config,
    mma_config,
)


def is_simulated() -> bool:
    """True when numba runs CUDA kernels in its Python simulator (NUMBA_ENABLE_CUDASIM=1)."""
    if importlib.util.find_spec("numba") is None:
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def _kernel_function(cfg, simulated: bool = False):
    """The kernel of a TileConfig, ThreadTileConfig or MmaConfig as a plain Python function."""
    if isinstance(cfg, MmaConfig):  # never simulated: launch_plan refuses it there
        return mma_kernel.kernel_function(cfg)
    if isinstance(cfg, ThreadTileConfig):
        return thread_tile_kernel.kernel_function(cfg, simulated)
    return row_kernel.kernel_function(cfg, simulated)


def _signature(cfg):
    from numba import types

    f = getattr(types, cfg.dtype)
    arr = f[:, :, ::1]
    if isinstance(cfg, (ThreadTileConfig, MmaConfig)):  # with the key splits' partial outputs
        return types.void(arr, arr, arr, arr, arr, arr, f, types.boolean, types.int64)
    return types.void(arr, arr, arr, arr, f, types.boolean)


def _jit_options(cfg) -> dict:
    # fastmath (float32 only): exp2 becomes the hardware ex2.approx, ample for a softmax.
    # launch_bounds (threads, min_blocks): two 256-thread blocks per SM cap registers at 128;
    # the row kernel then spills (float32 d = 64: 60 bytes) and promises one block per SM, the
    # thread-tiled kernel fits (120-128 registers, no spills) and promises two. The tensor-core
    # kernel's 128-thread blocks may use all 255 registers and still fit twice.
    return {"fastmath": cfg.dtype == "float32", "launch_bounds": (cfg.threads, cfg.min_blocks)}


def ptx_targets() -> list[tuple[object, object, object, dict]]:
    """Every kernel prepare() may launch: (config, python function, signature, jit options);
    the key splits' merge is the config "merge"; the tensor-core kernels in 3xTF32 and in plain
    TF32 (launched only when asked for)."""
    configs = []
    for dtype in DTYPES:
        for width in WIDTHS:
            for rows in ROW_CHOICES if dtype == "float32" else (32,):
                cfg = kernel_config(dtype, width, rows)
                configs.append(cfg)
                if isinstance(cfg, TileConfig):  # the row kernel: a grouped-query variant too
                    configs.append(replace(cfg, grouped=True))
    configs += [mma_config(width, passes) for width in MMA_WIDTHS for passes in MMA_PASSES]
    merge_target = ("merge", merge.merge_splits_function(), merge.signature(), {"fastmath": True})
    return [merge_target] + [
        (cfg, _kernel_function(cfg), _signature(cfg), _jit_options(cfg)) for cfg in configs
    ]


_KERNELS: dict[object, object] = {}


def _kernel(cfg):
    """Compiled once per variant and process (eagerly, with its signature)."""
    if cfg not in _KERNELS:
        from numba import cuda

        if is_simulated():
            _KERNELS[cfg] = cuda.jit(_kernel_function(cfg, simulated=True))
        else:
            _KERNELS[cfg] = cuda.jit(_signature(cfg), **_jit_options(cfg))(_kernel_function(cfg))
    return _KERNELS[cfg]


def _merge_kernel():
    if "merge" not in _KERNELS:
        from numba import cuda

        if is_simulated():
            _KERNELS["merge"] = cuda.jit(merge.merge_splits_function(simulated=True))
        else:
            _KERNELS["merge"] = cuda.jit(merge.signature(), fastmath=True)(
                merge.merge_splits_function()
            )
    return _KERNELS["merge"]
