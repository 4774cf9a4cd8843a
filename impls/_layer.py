"""The seed's whole layer: project tokens to queries, keys and values, split heads, attend."""

from __future__ import annotations

import numbers

import numpy as np

from impls._inputs import _as_float_array, _check_finite, check_causal


def _check_weight(name: str, w, x: np.ndarray) -> np.ndarray:
    w = _as_float_array(name, w)
    if w.ndim != 2 or w.shape[0] != x.shape[-1]:
        raise ValueError(
            f"{name}: expected shape (d_model={x.shape[-1]}, heads * d_head) to fit x, "
            f"got {w.shape}"
        )
    if w.dtype != x.dtype:
        raise TypeError(f"{name}: expected dtype {x.dtype} to match x, got {w.dtype}")
    if w.shape[1] == 0:
        raise ValueError(f"{name}: expected at least one output column, got shape {w.shape}")
    _check_finite(name, w)
    return w


def self_attention(x, w_q, w_k, w_v, *, heads=1, causal=False, scale=None, impl="numpy"):
    """Multi-head self-attention of tokens x (..., n, d_model).

    Q = x w_q, K = x w_k, V = x w_v, each split into `heads` heads of width w.shape[1] / heads;
    every head attends with the chosen implementation; heads are concatenated back, giving
    (..., n, w_v.shape[1]). No output projection: the seed stops at the weighted sum of values.
    """
    from impls._registry import get

    implementation = get(impl) if isinstance(impl, str) else impl
    x = _as_float_array("x", x)
    if x.ndim < 2:
        raise ValueError(
            f"x: expected at least 2 dimensions (..., n, d_model), got shape {x.shape}"
        )
    if x.shape[-2] == 0 or x.shape[-1] == 0:
        raise ValueError(f"x: expected n >= 1 tokens and d_model >= 1, got shape {x.shape}")
    _check_finite("x", x)
    if isinstance(heads, bool) or not isinstance(heads, numbers.Integral) or heads < 1:
        raise ValueError(f"heads: expected a positive integer, got {heads!r}")
    w_q, w_k, w_v = (_check_weight(n, w, x) for n, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)))
    if w_q.shape != w_k.shape:
        raise ValueError(f"w_k: expected shape {w_q.shape} to match w_q, got {w_k.shape}")
    for name, w in (("w_q", w_q), ("w_v", w_v)):
        if w.shape[1] % heads:
            raise ValueError(
                f"{name}: expected a column count divisible by heads={heads}, got {w.shape[1]}"
            )
    causal = check_causal(causal)

    def split_heads(t: np.ndarray) -> np.ndarray:
        # (..., n, heads * d_head) -> (..., heads, n, d_head)
        return np.swapaxes(t.reshape(*t.shape[:-1], heads, t.shape[-1] // heads), -2, -3)

    q, k, v = (split_heads(x @ w) for w in (w_q, w_k, w_v))
    out = implementation.attention(q, k, v, causal=causal, scale=scale)  # (..., heads, n, d_v)
    out = np.swapaxes(out, -2, -3)  # (..., n, heads, d_v)
    return out.reshape(*out.shape[:-2], -1)  # (..., n, heads * d_v)
