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


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("torch") is None:
        return "torch is not installed (pip install 'attnbench[peers]')"
    return None


def prepare(args):
    import torch

    # (batch, n, d) -> (1, batch, n, d): torch's fused CPU (flash) kernel wants 4-D inputs and
    # falls back to the unfused math path, which materialises the scores, for 3-D ones.
    q, k, v = (torch.from_numpy(np.ascontiguousarray(a))[None] for a in (args.q, args.k, args.v))
    return {"q": q, "k": k, "v": v, "causal": args.causal, "scale": args.scale, "out": None}


def run(state) -> None:
    import torch
    import torch.nn.functional as F

    with torch.inference_mode():
        state["out"] = F.scaled_dot_product_attention(
            state["q"], state["k"], state["v"], is_causal=state["causal"], scale=state["scale"]
        )


def fetch(state) -> np.ndarray:
    return state["out"][0].numpy()
