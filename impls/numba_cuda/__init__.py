"""Fused attention on the GPU with numba-cuda: K/V tiles in shared memory and an online softmax.

FlashAttention-style, three kernels, none with an n x n buffer in global memory:

- tensor cores (float32, d <= 128, compute capability 8.0+; MmaConfig, mma_kernel.py):
  FlashAttention-2's layout on `mma.sync.m16n8k8` TF32, emitted as inline PTX (numba-cuda has
  no tensor-core API; ptx.py), 4 warps of 16 query rows per block, in 3xTF32 (each float32
  operand as two TF32 halves, three products: float32 accuracy). The tuning table
  (plan.LAUNCH_TUNING) says which widths and lengths it takes: d = 128, and d = 64 from
  n = 16384, until a GPU has timed it. It cannot run in the simulator, so there the CUDA-core
  kernels run, and the CPU tests run its per-warp code in NumPy (fragment_model.py).
- thread-tiled (float32, 16 < d <= 64; ThreadTileConfig), on the FP32 CUDA cores: 16 x 16
  threads, each computing a rows x keys tile of the scores (4 x 2 at d = 64, 4 x 4 at d = 32;
  2 rows in 32-row blocks) and a rows x width/16 tile of the output as outer products, the way
  CUDA-core matrix products do: each value a thread loads from shared memory feeds 2-4 FMAs.
  The 16 threads of a row agree on its running maximum through shared memory.
- row per thread group (float64, and float32 at d <= 16 or > 64 where the tensor cores do not
  take it; TileConfig): `split` threads share each query row, each taking its own keys of
  every tile, merged once at the end.

Where one block per 64-row tile would leave the GPU half idle, `key_splits` blocks share a row
tile's keys and a small kernel merges their partial outputs (flash-decoding; the thread-tiled
and tensor-core kernels). Causal blocks stop at their last visible key, so fully masked K tiles
are never loaded, and start longest first. Measured on an H200: docs/PERFORMANCE.md (the
CUDA-core kernels; the tensor-core kernel awaits a GPU).

`numba.cuda` must be NVIDIA's numba-cuda package, not numba's deprecated built-in target: with
numba-cuda installed, numba's import redirector makes `numba.cuda` that package, and it says so
with `numba.cuda.implementation == "NVIDIA"`, which `unavailable_reason` checks. Every numba import
happens inside a function, so importing this module needs neither numba-cuda nor a GPU.
"""

from __future__ import annotations

import importlib.util
import time
from dataclasses import replace

import numpy as np

from impls.numba_cuda.kernels import (  # noqa: F401 - ptx_targets: for the PTX tests
    _kernel,
    _merge_kernel,
    is_simulated,
    ptx_targets,
)
from impls.numba_cuda.plan import (  # noqa: F401 - the tile choices are part of its surface
    BLOCKS_PER_MULTIPROCESSOR,
    DTYPES,
    GRID_SIDE,
    LAUNCH_TUNING,
    LOG2E,
    MAX_SCORE_BYTES,
    MAX_V_BYTES,
    MEASURED_ARCHITECTURE,
    MERGE_THREADS,
    MMA_KEYS,
    MMA_PASSES,
    MMA_WIDTHS,
    Q_PAD,
    REGISTER_WORDS,
    ROW_CHOICES,
    SPLIT,
    STATIC_SHARED_LIMIT,
    TENSOR_CORE_ARCHITECTURE,
    THREAD_TILE_WIDTHS,
    THREADS,
    UNROLL,
    WIDTHS,
    MmaConfig,
    ThreadTileConfig,
    TileConfig,
    block_rows,
    kernel_config,
    key_splits,
    launch_tuning,
    mma_config,
    thread_tile_config,
    thread_tile_rows,
    tile_config,
    uses_tensor_cores,
    width_for,
)

NAME = "numba_cuda"
DESCRIPTION = (
    "numba-cuda kernel: K/V tiles in shared memory, online softmax "
    "(float32 on tensor cores in 3xTF32 where planned, else FP32/FP64 CUDA cores)"
)
CAUSAL = True
DEVICE = "cuda"
STYLE = ("#2ca02c", "D")  # colour and marker in every figure

# The simulator runs a Python thread per CUDA thread: test suites shrink sequence lengths to this.
SIMULATOR_MAX_N = 64


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed (pip install 'attnbench[cuda]')"
    from numba import cuda

    if getattr(cuda, "implementation", None) != "NVIDIA":
        return "numba.cuda is numba's deprecated built-in target, not the numba-cuda package"
    if is_simulated():
        return None
    if not cuda.is_available():
        return "no CUDA GPU; set NUMBA_ENABLE_CUDASIM=1 to simulate"
    return None


def launch_plan(args, config=None, splits: int | None = None):
    """The tiles and key splits prepare() launches for these inputs: (config, splits).

    `config` and `splits` override the choice (for tuning) and are checked against the shapes.
    The tensor-core kernel is planned only on a GPU (the simulator cannot run its inline PTX).
    """
    batch, n_q, d_k = args.q.shape
    d_v = args.v.shape[2]
    causal = bool(args.causal)
    keys = min(args.k.shape[1], n_q) if causal else args.k.shape[1]  # the longest row tile's
    flop = 2 * batch * n_q * keys * (d_k + d_v)  # as if no mask: causal blocks wait on the longest
    multiprocessors, architecture = _multiprocessors(), _compute_capability()
    tuning = launch_tuning(architecture)
    slots = BLOCKS_PER_MULTIPROCESSOR * multiprocessors  # thread-tiled blocks at once
    cfg = config
    if cfg is None:
        dtype, width = args.dtype.name, width_for(d_k, d_v)
        d, n_k = max(d_k, d_v), args.k.shape[1]
        if not is_simulated() and uses_tensor_cores(dtype, d, n_q, n_k, architecture, tuning):
            cfg = mma_config(width)
        elif dtype == "float32" and width in THREAD_TILE_WIDTHS:
            rows = thread_tile_rows(batch, n_q, keys, slots, causal, flop, tuning)
            cfg = kernel_config(dtype, width, rows)
        else:
            col_blocks = -(-d_v // tile_config(dtype, width).v_width)
            blocks_at_64_rows = batch * -(-n_q // 64) * col_blocks
            rows = block_rows(dtype, blocks_at_64_rows, multiprocessors, causal, tuning)
            cfg = kernel_config(dtype, width, rows)
    elif isinstance(cfg, MmaConfig) and is_simulated():
        raise ValueError(f"the simulator cannot run the tensor-core kernel's inline PTX: {cfg}")
    if not isinstance(cfg, (ThreadTileConfig, MmaConfig)):
        cfg = replace(cfg, grouped=args.group > 1)  # the row kernel's variant of its own
        if splits not in (None, 1):
            raise ValueError(f"splits are for thread-tiled configs, got {splits} for {cfg}")
        return cfg, 1
    if max(d_k, d_v) > cfg.width:
        raise ValueError(f"d_k = {d_k} and d_v = {d_v} must fit the tile width {cfg.width}")
    if args.dtype.name != cfg.dtype:
        raise ValueError(f"{args.dtype.name} inputs need a {args.dtype.name} config, not {cfg}")
    if splits is None:
        slots = cfg.min_blocks * multiprocessors  # blocks of this kernel at once
        splits = key_splits(batch * -(-n_q // cfg.rows), keys, slots, causal, flop, tuning)
    if splits < 1:
        raise ValueError(f"splits must be at least 1, got {splits}")
    return cfg, splits


def prepare(args, config=None, splits: int | None = None):
    """Copies the inputs to the GPU (transfer_s) and compiles; computes nothing: every step on
    the device is `run`'s. `config` and `splits` override the plan (for tuning)."""
    from numba import cuda

    batch, n_q, _ = args.q.shape
    d_v = args.v.shape[2]
    causal = bool(args.causal)
    cfg, splits = launch_plan(args, config, splits)
    kernel = _kernel(cfg)
    start = time.perf_counter()
    dq, dk, dv = (cuda.to_device(np.ascontiguousarray(x)) for x in (args.q, args.k, args.v))
    cuda.synchronize()
    h2d_s = time.perf_counter() - start
    out = cuda.device_array((batch, n_q, d_v), args.dtype)
    row_blocks = batch * -(-n_q // cfg.rows)
    scale_log2 = args.scale * LOG2E
    if isinstance(cfg, (ThreadTileConfig, MmaConfig)):
        part_shape = (batch * splits, n_q, d_v) if splits > 1 else (1, 1, 1)
        o_part = cuda.device_array(part_shape, np.float32)
        ml_part = cuda.device_array((*part_shape[:2], 2), np.float32)
        arrays = (dq, dk, dv, out, o_part, ml_part) if splits > 1 else (dq, dk, dv, out)
        launch = kernel[row_blocks * splits, cfg.threads]
        launches = [(launch, (dq, dk, dv, out, o_part, ml_part, scale_log2, causal, splits))]
        if splits > 1:
            merge = _merge_kernel()[-(-out.size // MERGE_THREADS), MERGE_THREADS]
            launches.append((merge, (o_part, ml_part, out, splits)))
    else:
        arrays = (dq, dk, dv, out)
        grid = (row_blocks, -(-d_v // cfg.v_width))
        launches = [(kernel[grid, cfg.threads], (*arrays, scale_log2, causal))]
    state = {
        "config": cfg,
        "splits": splits,
        "grouped": args.group > 1,
        "launches": launches,
        "arrays": arrays,
        "h2d_s": h2d_s,
        "d2h_s": 0.0,
    }
    if not is_simulated():  # load the modules onto the GPU now, so that no run pays for it
        for launch, _ in launches:
            for compiled in launch.dispatcher.overloads.values():
                compiled.bind()
    return state


def variant(state) -> str:
    """Which kernel ran, for the report's "Which code ran" table."""
    cfg, splits = state["config"], state["splits"]
    split_note = f", {splits} key splits" if splits > 1 else ""
    grouped = ", grouped heads" if state["grouped"] else ""
    tiles = f"{cfg.rows}x{cfg.keys} tiles{split_note}{grouped}"
    if isinstance(cfg, MmaConfig):
        return f"tensor cores, {cfg.precision}, {tiles}"
    if isinstance(cfg, ThreadTileConfig):
        return f"CUDA cores, thread-tiled, {tiles}"
    return f"CUDA cores, row per {cfg.split} threads, {cfg.rows} rows x {cfg.keys} keys{grouped}"


def _multiprocessors() -> int:
    """The GPU's multiprocessor count; the simulator runs blocks one at a time, so 1."""
    from numba import cuda

    if is_simulated():
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def _compute_capability() -> tuple[int, int]:
    """The GPU's architecture, for the launch tuning table (the simulator's: the measured one)."""
    from numba import cuda

    if is_simulated():
        return MEASURED_ARCHITECTURE
    return tuple(cuda.get_current_device().compute_capability)


def _launch(state) -> None:
    for launch, arguments in state["launches"]:
        launch(*arguments)


def run(state):
    from numba import cuda

    _launch(state)
    cuda.synchronize()


def fetch(state):
    from numba import cuda

    start = time.perf_counter()
    out = state["arrays"][3].copy_to_host()
    cuda.synchronize()
    state["d2h_s"] = time.perf_counter() - start
    return out


def event_time_s(state) -> float:
    """One run timed on the GPU with CUDA events, in seconds.

    An untimed launch goes first, so the GPU is still busy with it while the host queues the
    timed one: the start event fires when that kernel can begin, and the host's launch
    overhead (tens of microseconds in numba) stays out of the figure, as long as one kernel
    outlasts one launch on the host (marginal below ~50 us per call; with key splits a run is
    two launches, the kernel and the merge, which is why splits wait for 2 GFLOP of work).
    Each sample costs two runs of GPU time. The simulator's events record nothing, so there it
    is the wall-clock time of the (synchronous) simulated launch.
    """
    from numba import cuda

    if is_simulated():
        start = time.perf_counter()
        run(state)
        return time.perf_counter() - start
    start, end = cuda.event(timing=True), cuda.event(timing=True)
    _launch(state)
    start.record()
    _launch(state)
    end.record()
    end.synchronize()
    return cuda.event_elapsed_time(start, end) / 1e3


def transfer_s(state) -> float:
    """Host-to-device copies (prepare) plus the last device-to-host copy (fetch)."""
    return state["h2d_s"] + state["d2h_s"]


def device_memory_bytes(state) -> int:
    """Q, K, V, the output and the key splits' partial outputs: no n x n buffer."""
    return int(sum(a.nbytes for a in state["arrays"]))
