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
    batch, n_q, d_k = args.q.shape
    # The query heads that share a key/value head (grouped-query attention), side by side:
    # q (kv batch, group, n_q, d_k) against k (kv batch, 1, n_k, d_k).
    q = args.q.reshape(-1, args.group, n_q, d_k)
    k_t = np.swapaxes(args.k, 1, 2)[:, None]
    scores = (q @ k_t) * args.q.dtype.type(args.scale)  # (kv batch, group, n_q, n_k)
    if state["future"] is not None:
        scores[..., state["future"]] = -np.inf
    scores -= scores.max(axis=3, keepdims=True)
    weights = np.exp(scores, out=scores)
    weights /= weights.sum(axis=3, keepdims=True)
    state["out"] = (weights @ args.v[:, None]).reshape(batch, n_q, -1)  # (batch, n_q, d_v)


def fetch(state) -> np.ndarray:
    return state["out"]
