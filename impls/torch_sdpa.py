"""torch.nn.functional.scaled_dot_product_attention: what users would pick instead (the yardstick).

Optional: needs the `peers` extra (torch). On the CPU torch picks its fused flash kernel; on CUDA
the memory-efficient kernel for float32. Inputs are wrapped without copies where torch allows.
"""

from __future__ import annotations

import importlib.util

import numpy as np

DESCRIPTION = "torch.nn.functional.scaled_dot_product_attention (optional peer, CPU)"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cpu"
STYLE = ("#d62728", "v")  # colour and marker in every figure


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'attnbench[peers]')"
    return None


def prepare(args):
    import torch  # noqa: F401 - imported (and its thread pool sized) outside the timed call

    return {"args": args, "out": None}


def run(state) -> None:
    args = state["args"]
    # (batch, n, d) -> (1, batch, n, d): torch's fused CPU (flash) kernel wants 4-D inputs and
    # falls back to the unfused math path, which materialises the scores, for 3-D ones. No copy
    # for contiguous inputs (the usual case); a strided one is copied, as a user's call would.
    # Grouped-query attention: query head b of the batch uses key/value head b // group, which is
    # torch's enable_gqa mapping for these (1, heads, n, d) tensors.
    q, k, v = (to_torch(a)[None] for a in (args.q, args.k, args.v))
    state["out"] = sdpa(q, k, v, args.causal, args.scale)


def to_torch(array: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(array))


def sdpa(q, k, v, causal: bool, scale: float):
    """torch's attention on tensors (batch, heads, n, d), on whichever device they are."""
    import torch
    import torch.nn.functional as F

    grouped = q.shape[-3] != k.shape[-3]
    with torch.inference_mode():
        return F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, scale=scale, enable_gqa=grouped
        )


def fetch(state) -> np.ndarray:
    return state["out"][0].numpy()
