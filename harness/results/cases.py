"""A case: one shape and dtype for one implementation, the key of a row of results.

The sweep plans cases, a worker measures one, results.jsonl keys its row on one; the FLOPs and
bytes every rate divides by are the case's.
"""

from __future__ import annotations

from dataclasses import asdict, astuple, dataclass, fields, replace

import numpy as np


@dataclass(frozen=True, order=True)
class Case:
    """One point of a sweep for one implementation.

    n is the number of keys (the sequence, or the KV cache in decode); n_q the number of
    queries (n unless given: self-attention over a sequence); heads query heads share kv_heads
    key/value heads (heads unless given; fewer is grouped-query attention).
    """

    impl: str
    n: int
    d: int
    dtype: str = "float32"
    batch: int = 1
    heads: int = 1
    causal: bool = False
    kv_heads: int | None = None
    n_q: int | None = None

    def __post_init__(self):
        if self.kv_heads is None:
            object.__setattr__(self, "kv_heads", self.heads)
        if self.n_q is None:
            object.__setattr__(self, "n_q", self.n)

    @property
    def key(self) -> tuple:
        """Identity of the case across runs (what `--resume` and `compare` match on)."""
        return astuple(self)

    def at_n(self, n: int) -> Case:
        """The same case with n keys, and n queries too unless the query length is fixed."""
        return replace(self, n=n, n_q=n if self.n_q == self.n else self.n_q)

    @property
    def itemsize(self) -> int:
        return np.dtype(self.dtype).itemsize

    @property
    def visible_pairs(self) -> float:
        """(query, key) pairs the mask lets through, per head: n_q * n, or with the causal mask
        (top-left aligned) half of n^2 for a square one (the convention of FLOP counts), else
        exactly sum_i min(i + 1, n)."""
        if not self.causal:
            return float(self.n_q * self.n)
        if self.n_q == self.n:
            return self.n * self.n / 2
        square = min(self.n_q, self.n)
        return square * (square + 1) / 2 + max(0, self.n_q - self.n) * self.n

    @property
    def flops(self) -> float:
        """The two matrix products, 2 * d FLOPs per visible (query, key) pair each."""
        return 4.0 * self.batch * self.heads * self.visible_pairs * self.d

    @property
    def bytes(self) -> int:
        """What a call must move at least: q, and K and V once per key/value head, read; the
        output written (grouped-query heads read their shared K and V once)."""
        q_and_out = 2 * self.heads * self.n_q * self.d
        kv = 2 * self.kv_heads * self.n * self.d
        return self.batch * (q_and_out + kv) * self.itemsize

    @property
    def score_matrix_bytes(self) -> int:
        """What materialising the n_q x n scores of one head costs: the naive memory bound."""
        return self.n_q * self.n * self.itemsize

    def to_dict(self) -> dict:
        return asdict(self)


# What a case is, derived from its fields: the shape is all of it but the implementation.
CASE_FIELDS = tuple(f.name for f in fields(Case))
SHAPE_FIELDS = tuple(name for name in CASE_FIELDS if name != "impl")
INTEGER_FIELDS = tuple(f.name for f in fields(Case) if f.type.startswith("int"))
