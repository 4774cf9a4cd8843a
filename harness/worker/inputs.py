"""Benchmark inputs: a case's q, k and v come from a seeded generator."""

from __future__ import annotations

import numpy as np

from harness.results.cases import Case


def make_qkv(
    n_q: int,
    n_k: int,
    d_k: int,
    d_v: int | None = None,
    *,
    lead: tuple[int, ...] = (),
    kv_heads: int | None = None,
    dtype: str = "float32",
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Standard normal q (*lead, n_q, d_k), k (*kv_lead, n_k, d_k), v (*kv_lead, n_k, d_v); kv_lead
    is lead with its last (head) dimension replaced by kv_heads, if given (grouped-query)."""
    rng = np.random.default_rng(seed)
    d_v = d_k if d_v is None else d_v
    kv_lead = lead if kv_heads is None else (*lead[:-1], kv_heads)
    q = rng.standard_normal((*lead, n_q, d_k)).astype(dtype)
    k = rng.standard_normal((*kv_lead, n_k, d_k)).astype(dtype)
    v = rng.standard_normal((*kv_lead, n_k, d_v)).astype(dtype)
    return q, k, v


def case_inputs(case: Case, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return make_qkv(
        case.n_q,
        case.n,
        case.d,
        lead=(case.batch, case.heads),
        kv_heads=case.kv_heads,
        dtype=case.dtype,
        seed=seed,
    )
