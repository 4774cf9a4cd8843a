"""Vectorised NumPy over blocks of query rows, so the scores stay in cache.

The textbook version (q @ k.T, softmax, @ v) builds the whole n_q x n_k score matrix; here each
block of rows gets its scores, an in-place stable softmax and its share of the output, so the
extra memory is O(block x n_k) and the block is reused from cache. BLAS does the products.
"""

from __future__ import annotations

import numpy as np

NAME = "numpy"
DESCRIPTION = "vectorised NumPy, row blocks with an in-place stable softmax (BLAS matmuls)"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cpu"

SCORE_BLOCK_BYTES = 1 << 20  # one block of scores; about L2-sized


def unavailable_reason() -> str | None:
    return None


def block_rows(n_q: int, n_k: int, itemsize: int) -> int:
    """Rows per block: enough for BLAS to be efficient, few enough to stay in cache."""
    rows = SCORE_BLOCK_BYTES // (n_k * itemsize)
    return int(min(n_q, max(16, rows)))


def prepare(args):
    batch, n_q, d_k = args.q.shape
    n_k, d_v = args.v.shape[1:]
    block = block_rows(n_q, n_k, args.dtype.itemsize)
    return {
        "args": args,
        "block": block,
        "q_block": np.empty((block, d_k), args.dtype),
        "scores": np.empty((block, n_k), args.dtype),
        "row_sums": np.empty((block, 1), args.dtype),
        # Above-diagonal entries of a block x block tile: the keys a causal row may not see.
        "future": np.triu(np.ones((block, block), dtype=bool), k=1),
        "out": np.empty((batch, n_q, d_v), args.dtype),
    }


def run(state):
    args = state["args"]
    q, k, v, out = args.q, args.k, args.v, state["out"]
    n_q, n_k = q.shape[1], k.shape[1]
    block = state["block"]
    for b in range(q.shape[0]):
        k_t = k[b].T  # (d_k, n_k), a view
        for start in range(0, n_q, block):
            stop = min(start + block, n_q)
            rows = stop - start
            # Causal rows start..stop-1 see keys 0..stop-1 at most (top-left aligned).
            keys = min(n_k, stop) if args.causal else n_k
            q_block = np.multiply(q[b, start:stop], args.scale, out=state["q_block"][:rows])
            s = np.matmul(q_block, k_t[:, :keys], out=state["scores"][:rows, :keys])
            if args.causal and start < keys:
                diag = s[:, start:keys]  # (rows, keys - start), a view
                diag[state["future"][:rows, : keys - start]] = -np.inf
            s -= s.max(axis=1, keepdims=True)
            np.exp(s, out=s)
            row_sums = np.sum(s, axis=1, keepdims=True, out=state["row_sums"][:rows])
            np.matmul(s, v[b, :keys], out=out[b, start:stop])
            out[b, start:stop] /= row_sums


def fetch(state):
    return state["out"]
