"""The seed's whole layer: project tokens to queries, keys and values, split heads, attend."""

from __future__ import annotations

import numbers

import numpy as np

from impls._inputs import _as_float_array, _check_finite, check_flag


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


def _check_heads(name: str, value, default: int | None = None) -> int:
    if value is None and default is not None:
        return default
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name}: expected a positive integer, got {value!r}")
    return int(value)


def self_attention(
    x, w_q, w_k, w_v, *, heads=1, kv_heads=None, causal=False, scale=None, impl="numpy"
):
    """Multi-head self-attention of tokens x (..., n, d_model).

    Q = x w_q, K = x w_k, V = x w_v; Q is split into `heads` heads, K and V into `kv_heads`
    (default: heads; fewer is grouped-query attention, heads / kv_heads query heads sharing each
    key/value head); every head attends with the chosen implementation; heads are concatenated
    back, giving (..., n, heads * d_v). No output projection: the seed stops at the weighted sum
    of values.
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
    heads = _check_heads("heads", heads)
    kv_heads = _check_heads("kv_heads", kv_heads, default=heads)
    if heads % kv_heads:
        raise ValueError(
            f"kv_heads: expected a divisor of heads={heads} (grouped-query attention), "
            f"got kv_heads={kv_heads}"
        )
    w_q, w_k, w_v = (_check_weight(n, w, x) for n, w in (("w_q", w_q), ("w_k", w_k), ("w_v", w_v)))
    for name, w, count in (("w_q", w_q, heads), ("w_k", w_k, kv_heads), ("w_v", w_v, kv_heads)):
        if w.shape[1] % count:
            what = "heads" if name == "w_q" else "kv_heads"
            raise ValueError(
                f"{name}: expected a column count divisible by {what}={count}, got {w.shape[1]}"
            )
    d_head = w_q.shape[1] // heads
    if w_k.shape[1] != kv_heads * d_head:
        raise ValueError(
            f"w_k: expected {kv_heads * d_head} columns (kv_heads={kv_heads} heads of the "
            f"query heads' width {d_head}), got {w_k.shape[1]}"
        )
    causal = check_flag("causal", causal)

    def split_heads(t: np.ndarray, count: int) -> np.ndarray:
        # (..., n, count * d_head) -> (..., count, n, d_head)
        return np.swapaxes(t.reshape(*t.shape[:-1], count, t.shape[-1] // count), -2, -3)

    q = split_heads(x @ w_q, heads)
    k, v = (split_heads(x @ w, kv_heads) for w in (w_k, w_v))
    out = implementation.attention(q, k, v, causal=causal, scale=scale)  # (..., heads, n, d_v)
    out = np.swapaxes(out, -2, -3)  # (..., n, heads, d_v)
    return out.reshape(*out.shape[:-2], -1)  # (..., n, heads * d_v)
