"""torch.nn.functional.scaled_dot_product_attention on a CUDA GPU: numba_cuda's yardstick.

Optional: needs the `peers` extra (torch built with CUDA) and a GPU. For float32 torch picks its
memory-efficient kernel, whose products run on the tensor cores in 3xTF32 (CUTLASS's
OpMultiplyAddFastF32, float32 accuracy); for float64 its unfused math path. Timed like
numba_cuda, with CUDA events around one launch queued behind another; copies reported apart.
"""

from __future__ import annotations

import time

import numpy as np

from impls import torch_sdpa as cpu_peer  # the same call, on the CPU

DESCRIPTION = "torch.nn.functional.scaled_dot_product_attention (optional peer, CUDA GPU)"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cuda"


def unavailable_reason() -> str | None:
    reason = cpu_peer.unavailable_reason()
    if reason is not None:
        return reason
    import torch

    if not torch.cuda.is_available():
        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        return f"torch {torch.__version__} ({build}) sees no CUDA GPU"
    return None


def prepare(args):
    """Copy the inputs to the GPU (reported as transfers) and start torch's CUDA context on a
    tiny call; torch chooses its kernel per shape inside every call."""
    import torch

    start = time.perf_counter()
    q, k, v = (cpu_peer.to_torch(a)[None].to("cuda") for a in (args.q, args.k, args.v))
    torch.cuda.synchronize()
    h2d_s = time.perf_counter() - start
    tiny = torch.zeros((1, 1, 1, args.q.shape[2]), dtype=q.dtype, device="cuda")
    cpu_peer.sdpa(tiny, tiny, tiny, False, 1.0)
    torch.cuda.synchronize()
    return {
        "q": q,
        "k": k,
        "v": v,
        "causal": args.causal,
        "scale": args.scale,
        "out": None,
        "h2d_s": h2d_s,
        "d2h_s": 0.0,
    }


def _attend(state) -> None:
    state["out"] = cpu_peer.sdpa(
        state["q"], state["k"], state["v"], state["causal"], state["scale"]
    )


def run(state) -> None:
    import torch

    _attend(state)
    torch.cuda.synchronize()


def event_time_s(state) -> float:
    """One call timed with CUDA events, queued behind an untimed one (see numba_cuda)."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    _attend(state)
    start.record()
    _attend(state)
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
    """Peak bytes torch's allocator holds during one more call: inputs, output and workspace."""
    import torch

    state["out"] = None
    torch.cuda.reset_peak_memory_stats()
    run(state)
    return int(torch.cuda.max_memory_allocated())
