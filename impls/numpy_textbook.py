"""The textbook NumPy expression, q @ k.T, softmax, @ v: the baseline that `numpy` improves on.

It materialises the whole n_q x n_k score matrix (O(n^2) extra memory, walked from memory by
each element-wise pass on one core); kept so that every sweep shows what blocking buys.
"""

from __future__ import annotations

import numpy as np

DESCRIPTION = "textbook NumPy: full score matrix, softmax, matmul (the O(n^2)-memory baseline)"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cpu"


def unavailable_reason() -> str | None:
    return None


def prepare(args):
    n_q, n_k = args.q.shape[1], args.k.shape[1]
    # Top-left aligned causal mask, as torch's is_causal: query i sees keys 0..i.
    future = np.triu(np.ones((n_q, n_k), dtype=bool), k=1) if args.causal else None
    return {"args": args, "future": future, "out": None}


def run(state) -> None:
    args = state["args"]
    scores = (args.q @ np.swapaxes(args.k, 1, 2)) * args.q.dtype.type(args.scale)  # (b, n_q, n_k)
    if state["future"] is not None:
        scores[:, state["future"]] = -np.inf
    scores -= scores.max(axis=2, keepdims=True)
    weights = np.exp(scores, out=scores)
    weights /= weights.sum(axis=2, keepdims=True)
    state["out"] = weights @ args.v  # (batch, n_q, d_v)


def fetch(state) -> np.ndarray:
    return state["out"]
