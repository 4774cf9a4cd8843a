"""Agreement with a float64 reference, under tolerances derived from dtype and size.

Error measure. The output is a convex combination of rows of v, so its natural scale is max|v|:
we report max_abs_err = max |out - ref| and max_rel_err = max_abs_err / max|v|, and compare
max_rel_err with the tolerance.

Tolerance. For an implementation that computes in the input's precision (unit roundoff eps):
- each score s_ij = scale * q_i . k_j carries a rounding error of about eps * sqrt(d_k) * T, where
  T = scale * max_ij sum_l |q_il k_jl| (Higham's bound for a dot product is d_k * eps * T; with
  rounding errors of random sign it grows like sqrt(d_k), Higham & Mary 2019);
- softmax turns an absolute score error delta into a weight error of at most about 2 * delta in
  total, so the output moves by about 2 * delta * max|v|;
- the weighted sum over n_k values adds about eps * sqrt(n_k) * max|v|; exp and the division add a
  few eps.
So tolerance = FACTOR[dtype] * eps * (2 * sqrt(d_k) * T + sqrt(n_k) + 4). It grows with n and d
through sqrt(n_k) and sqrt(d_k) * T, and with the magnitude of the scores through T: when the
scores are huge (inputs times 1e3 in float32), the tolerance honestly becomes large, because
float32 cannot resolve such scores. FACTOR is a safety margin of 4 over the typical-case estimate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from impls import AttentionArgs, Implementation

FACTOR = {"float32": 4.0, "float64": 4.0}


def reference_attention(
    q: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    causal: bool = False,
    scale: float | None = None,
    rows: np.ndarray | None = None,
) -> np.ndarray:
    """softmax(q k^T * scale) v in float64, optionally for a subset of query rows only.

    k and v may have fewer heads (axis -3) than q: grouped-query attention, query head h
    attending with key/value head h // (H / H_kv).
    """
    q, k, v = (np.asarray(a, dtype=np.float64) for a in (q, k, v))
    k, v = (shared_heads(x, q) for x in (k, v))
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    row_ids = np.arange(q.shape[-2]) if rows is None else np.asarray(rows)
    s = (q[..., row_ids, :] @ np.swapaxes(k, -1, -2)) * scale  # (..., rows, n_k)
    if causal:
        s[..., row_ids[:, None] < np.arange(k.shape[-2])[None, :]] = -np.inf
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return (p / p.sum(axis=-1, keepdims=True)) @ v  # (..., rows, d_v)


def shared_heads(x: np.ndarray, q: np.ndarray) -> np.ndarray:
    """k or v with each key/value head repeated for the query heads that share it."""
    if x.shape[:-2] == q.shape[:-2]:
        return x
    return np.repeat(x, q.shape[-3] // x.shape[-3], axis=-3)


def score_magnitude(q: np.ndarray, k: np.ndarray, scale: float, rows=None) -> float:
    """T = scale * max_ij sum_l |q_il k_jl|, the size that bounds a score's rounding error."""
    q_abs = np.abs(np.asarray(q, dtype=np.float64))
    if rows is not None:
        q_abs = q_abs[..., rows, :]
    k_abs = np.abs(shared_heads(np.asarray(k, dtype=np.float64), q_abs))
    return float(scale * (q_abs @ np.swapaxes(k_abs, -1, -2)).max())


def tolerance(dtype: str, n_k: int, d_k: int, score_size: float) -> float:
    """The largest max_rel_err accepted; see the module docstring for the derivation."""
    eps = float(np.finfo(dtype).eps)
    return FACTOR[dtype] * eps * (2 * math.sqrt(d_k) * score_size + math.sqrt(n_k) + 4)


@dataclass(frozen=True)
class Agreement:
    """How one output compares with the reference."""

    max_abs_err: float
    max_rel_err: float
    where: tuple[int, ...]
    tolerance: float
    problem: str | None = None  # wrong shape or non-finite output, when that is the failure

    @property
    def ok(self) -> bool:
        return self.problem is None and self.max_rel_err <= self.tolerance


def compare(out: np.ndarray, args: AttentionArgs, rows: np.ndarray | None = None) -> Agreement:
    """Compare an implementation's output (all rows, or `rows` only) with the reference."""
    ref = reference_attention(args.q, args.k, args.v, args.causal, args.scale, rows)
    tol = tolerance(
        args.dtype.name,
        args.k.shape[1],
        args.q.shape[2],
        score_magnitude(args.q, args.k, args.scale, rows),
    )
    out = np.asarray(out).reshape(-1, *np.asarray(out).shape[-2:])
    if rows is not None:
        out = out[:, rows, :]
    if out.shape != ref.shape:
        return Agreement(
            math.inf, math.inf, (), tol, f"output shape {out.shape}, expected {ref.shape}"
        )
    err = np.abs(out.astype(np.float64) - ref)

    def place(index) -> tuple[int, ...]:
        """(batch, query row, column) in the full output, also when only `rows` were checked."""
        b, i, j = (int(x) for x in index)
        return (b, i if rows is None else int(rows[i]), j)

    if not np.isfinite(err).all():
        where = place(np.argwhere(~np.isfinite(err))[0])
        return Agreement(math.inf, math.inf, where, tol, f"non-finite output at {where}")
    worst = np.unravel_index(np.argmax(err), err.shape)
    max_abs = float(err[worst])
    v_scale = float(np.abs(args.v).max()) or 1.0
    return Agreement(max_abs, max_abs / v_scale, place(worst), tol)


def check_implementation(impl: Implementation, args: AttentionArgs) -> Agreement:
    """Run `impl` on checked inputs and compare every row with the reference."""
    call = impl.prepare_checked(args)
    call.run()
    return compare(call.fetch(), args)
