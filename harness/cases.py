"""Benchmark inputs: one case is a shape and dtype; its inputs come from a seeded generator."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, order=True)
class Case:
    """One point of a sweep for one implementation; n is the sequence length (n_q = n_k)."""

    impl: str
    n: int
    d: int
    dtype: str = "float32"
    batch: int = 1
    heads: int = 1
    causal: bool = False

    @property
    def key(self) -> tuple:
        """Identity of the case across runs (what `--resume` and `compare` match on)."""
        return (self.impl, self.n, self.d, self.dtype, self.batch, self.heads, self.causal)

    @property
    def flops(self) -> float:
        """The two matrix products, 2*n*n*d FLOPs each, halved under the causal mask."""
        full = 4.0 * self.batch * self.heads * self.n * self.n * self.d
        return full / 2 if self.causal else full

    @property
    def score_matrix_bytes(self) -> int:
        """What materialising the n x n scores of one head costs: the naive memory bound."""
        return self.n * self.n * np.dtype(self.dtype).itemsize

    def to_dict(self) -> dict:
        return asdict(self)


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
        case.n, case.n, case.d, lead=(case.batch, case.heads), dtype=case.dtype, seed=seed
    )
