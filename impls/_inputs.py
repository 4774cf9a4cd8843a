"""Argument checks shared by every entry point, done once before any computation.

Each failure names the argument, what was expected and what was given, so a user (or a sweep's
log) can tell the fix without reading a traceback.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

SUPPORTED_DTYPES = ("float32", "float64")


@dataclass(frozen=True)
class AttentionArgs:
    """Checked inputs flattened to (batch, n, d); `lead` restores the caller's leading dims.

    Grouped-query attention: k and v may have fewer heads than q (`group` query heads share one
    key/value head); flattened, query entry b attends with key/value entry b // group.
    """

    q: np.ndarray  # (batch, n_q, d_k)
    k: np.ndarray  # (batch / group, n_k, d_k)
    v: np.ndarray  # (batch / group, n_k, d_v)
    causal: bool
    scale: float
    lead: tuple[int, ...]

    @property
    def dtype(self) -> np.dtype:
        return self.q.dtype

    @property
    def group(self) -> int:
        """Query heads per key/value head: 1 unless grouped-query attention."""
        return self.q.shape[0] // self.k.shape[0]

    @property
    def out_shape(self) -> tuple[int, ...]:
        return (*self.lead, self.q.shape[1], self.v.shape[2])


def _as_float_array(name: str, x) -> np.ndarray:
    if isinstance(x, np.ndarray):
        arr = x
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # noqa: BLE001 - reported as what could not be converted
            raise TypeError(
                f"{name}: expected a NumPy array, got {type(x).__name__} ({exc})"
            ) from None
    if arr.dtype.name not in SUPPORTED_DTYPES:
        raise TypeError(
            f"{name}: expected a floating array of dtype float32 or float64, got dtype {arr.dtype}"
        )
    return arr


def _check_finite(name: str, arr: np.ndarray) -> None:
    if not np.isfinite(arr).all():
        bad = tuple(int(i) for i in np.argwhere(~np.isfinite(arr))[0])
        raise ValueError(f"{name}: expected finite values, got {arr[bad]} at index {bad}")


def check_scale(scale, d_k: int) -> float:
    """Default 1/sqrt(d_k); otherwise a positive finite real number."""
    if scale is None:
        return 1.0 / math.sqrt(d_k)
    if isinstance(scale, bool) or not isinstance(scale, numbers.Real):
        raise TypeError(f"scale: expected a positive finite number or None, got {scale!r}")
    value = float(scale)
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"scale: expected a positive finite number or None, got {scale!r}")
    return value


def check_flag(name: str, value) -> bool:
    """A True/False argument (causal, check_finite): a bool or NumPy bool, nothing else."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected True or False, got {value!r}")
    return bool(value)


def _check_grouped_heads(q_shape: tuple, k_shape: tuple) -> None:
    """q (..., H, n_q, d_k) against k (..., H_kv, n_k, d_k): same batch dims, H_kv dividing H."""
    if len(q_shape) != len(k_shape) or len(q_shape) < 3 or q_shape[:-3] != k_shape[:-3]:
        raise ValueError(
            "q, k, v: expected the same leading (batch, head) dimensions, or the same batch "
            "dimensions and fewer key/value heads (grouped-query attention), got "
            f"q {q_shape[:-2]}, k {k_shape[:-2]}"
        )
    heads, kv_heads = q_shape[-3], k_shape[-3]
    if kv_heads == 0 or heads % kv_heads:
        raise ValueError(
            f"k: expected a number of key/value heads that divides the {heads} query heads "
            f"(grouped-query attention), got {kv_heads} key/value heads"
        )


def check_attention_args(q, k, v, causal=False, scale=None, check_finite=True) -> AttentionArgs:
    """Check q (..., H, n_q, d_k), k (..., H_kv, n_k, d_k), v (..., H_kv, n_k, d_v), H_kv = H or
    a divisor of it (grouped-query attention); flatten the leading dims.

    check_finite (as in scipy.linalg): refuse NaN and inf in q, k and v. It reads every value,
    which for decode takes twice as long as the attention itself; False skips it (NaN in,
    NaN out)."""
    arrays = {"q": q, "k": k, "v": v}
    arrays = {name: _as_float_array(name, x) for name, x in arrays.items()}
    for name, arr in arrays.items():
        if arr.ndim < 2:
            raise ValueError(
                f"{name}: expected at least 2 dimensions (..., n, d), got shape {arr.shape}"
            )
    q, k, v = arrays["q"], arrays["k"], arrays["v"]
    if not (q.dtype == k.dtype == v.dtype):
        raise TypeError(
            f"q, k, v: expected one dtype for all three, got q {q.dtype}, k {k.dtype}, v {v.dtype}"
        )
    if k.shape[:-2] != v.shape[:-2]:
        raise ValueError(
            "k, v: expected the same leading (batch, head) dimensions, got "
            f"k {k.shape[:-2]}, v {v.shape[:-2]}"
        )
    if q.shape[:-2] != k.shape[:-2]:
        _check_grouped_heads(q.shape, k.shape)
    if q.shape[-1] != k.shape[-1]:
        raise ValueError(
            f"k: expected last dimension d_k = {q.shape[-1]} to match q, got shape {k.shape}"
        )
    if k.shape[-2] != v.shape[-2]:
        raise ValueError(f"v: expected n_k = {k.shape[-2]} rows to match k, got shape {v.shape}")
    for name, arr in (("q", q), ("k", k), ("v", v)):
        if arr.shape[-2] == 0:
            raise ValueError(
                f"{name}: expected a non-empty sequence (n >= 1), got shape {arr.shape}"
            )
        if arr.shape[-1] == 0:
            raise ValueError(f"{name}: expected a feature dimension d >= 1, got shape {arr.shape}")
    for name, arr in (("q", q), ("k", k)):
        if any(s == 0 for s in arr.shape[:-2]):
            raise ValueError(
                f"{name}: expected non-empty leading dimensions, got shape {arr.shape}"
            )
    if check_flag("check_finite", check_finite):
        for name, arr in (("q", q), ("k", k), ("v", v)):
            _check_finite(name, arr)
    lead = q.shape[:-2]
    return AttentionArgs(
        q=q.reshape(-1, *q.shape[-2:]),
        k=k.reshape(-1, *k.shape[-2:]),
        v=v.reshape(-1, *v.shape[-2:]),
        causal=check_flag("causal", causal),
        scale=check_scale(scale, q.shape[-1]),
        lead=tuple(int(s) for s in lead),
    )
