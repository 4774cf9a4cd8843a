"""torch.nn.functional.scaled_dot_product_attention on a CUDA GPU: numba_cuda's yardstick.

Optional: needs the `peers` extra (torch built with CUDA) and a GPU. For float32 torch picks its
memory-efficient kernel, whose products run on the tensor cores in 3xTF32 (CUTLASS's
OpMultiplyAddFastF32, float32 accuracy); for float64 its unfused math path. Timed like
numba_cuda, with CUDA events around one launch queued behind another; copies reported apart.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np

DESCRIPTION = "torch.nn.functional.scaled_dot_product_attention (optional peer, CUDA GPU)"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cuda"


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'attnbench[peers]')"
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"torch {torch.__version__} ({build}) sees no CUDA GPU"
    return None


def prepare(args):
    import torch

    start = time.perf_counter()
    # (batch, n, d) -> (1, batch, n, d): the fused kernels want 4-D inputs.
    q, k, v = (
        torch.from_numpy(np.ascontiguousarray(a))[None].to("cuda") for a in (args.q, args.k, args.v)
    )
    torch.cuda.synchronize()
    state = {
        "q": q,
        "k": k,
        "v": v,
        "causal": bool(args.causal),
        "scale": args.scale,
        "out": None,
        "h2d_s": time.perf_counter() - start,
        "d2h_s": 0.0,
    }
    run(state)  # kernel selection and workspace happen here, not in the first timed run
    state["out"] = None
    torch.cuda.reset_peak_memory_stats()
    run(state)
    state["peak_bytes"] = torch.cuda.max_memory_allocated()
    return state


def _launch(state) -> None:
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        state["out"] = F.scaled_dot_product_attention(
            state["q"], state["k"], state["v"], is_causal=state["causal"], scale=state["scale"]
        )


def run(state) -> None:
    import torch

    _launch(state)
    torch.cuda.synchronize()


def event_time_s(state) -> float:
    """One call timed with CUDA events, queued behind an untimed one (see numba_cuda)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    _launch(state)
    start.record()
    _launch(state)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def fetch(state) -> np.ndarray:
    import torch

    start = time.perf_counter()
    out = state["out"][0].cpu().numpy()
    torch.cuda.synchronize()
    state["d2h_s"] = time.perf_counter() - start
    return out


def transfer_s(state) -> float:
    """Host-to-device copies (prepare) plus the last device-to-host copy (fetch)."""
    return state["h2d_s"] + state["d2h_s"]


def device_memory_bytes(state) -> int:
    """Peak bytes torch's allocator held during one call: inputs, output and workspace."""
    return int(state["peak_bytes"])
