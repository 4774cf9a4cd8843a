"""The tensor-core kernel run in NumPy on the CPU: mma_kernel.steps (the kernel's own per-warp
code) over NumPy primitives, each lane argument an array of the 32 lanes, each mma the
fragments.warp_mma model, each shuffle an index permutation of the lanes.

numba-cuda's simulator runs neither inline PTX nor warp shuffles, so this is how the CPU tests
check the kernel's fragment indices, masking, online softmax, quad reductions, key splits and
grouped heads against a float64 reference. What it cannot check: that the hardware's fragments
are the ones fragments.py says (PTX ISA and CUTLASS agree; a GPU run settles it), and the
compiled code (the PTX tests compile it and count spills).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np

from impls.numba_cuda import fragments, mma_kernel
from impls.numba_cuda.plan import MMA_WARPS, MmaConfig

LANE = fragments.lane_indices()


class Lanes:
    """A local (per-thread) array of the kernel, for all 32 lanes at once: element [i, j] is
    the (32,) array of every lane's value. Reads copy, so that a value read and then
    overwritten keeps what was read, as a register does."""

    def __init__(self, *shape):
        self.values = np.zeros((*shape, fragments.LANES), np.float32)

    def __getitem__(self, index):
        return self.values[index].copy()

    def __setitem__(self, index, value):
        self.values[index] = value


def _mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
    d = fragments.warp_mma(
        np.stack([a0, a1, a2, a3], axis=1),
        np.stack([b0, b1], axis=1),
        np.stack([c0, c1, c2, c3], 1),
    )
    return d[:, 0], d[:, 1], d[:, 2], d[:, 3]


def _load_or_zero(array, b, row, col, valid):
    row = np.minimum(row, np.uint64(array.shape[1] - 1))
    col = np.minimum(col, np.uint64(array.shape[2] - 1))
    return np.where(valid, array[b, row, col], np.float32(0.0)).astype(np.float32)


def _store_if(array, b, row, col, value, valid):
    valid = np.broadcast_to(valid, np.shape(row))
    array[b, row[valid], np.broadcast_to(col, row.shape)[valid]] = np.asarray(value)[valid]


def numpy_ops() -> SimpleNamespace:
    """mma_kernel.steps' primitives over arrays of lanes."""
    return SimpleNamespace(
        jit=lambda f: f,
        uint64=np.uint64,
        mma=_mma,
        tf32=fragments.tf32,
        tf32_pinned=fragments.tf32,
        shfl_xor=lambda x, mask: x[LANE ^ np.uint64(mask)],
        fmax=np.maximum,
        select=lambda condition, a, b: np.where(condition, a, b).astype(np.float32),
        exp2=lambda x: np.exp2(x).astype(np.float32),
        load_or_zero=_load_or_zero,
        store_if=_store_if,
    )


def model_attention(q, k, v, causal, scale, cfg: MmaConfig, splits: int = 1):
    """The kernel's output for (batch, n, d) float32 inputs, block by block and warp by warp
    as the GPU runs it (key splits merged as merge.py does)."""
    q, k, v = (np.ascontiguousarray(x, np.float32) for x in (q, k, v))
    if max(q.shape[2], v.shape[2]) > cfg.width:
        raise ValueError(f"d_k = {q.shape[2]} and d_v = {v.shape[2]} exceed width {cfg.width}")
    st = mma_kernel.steps(cfg, numpy_ops())
    batch, n_q, _ = q.shape
    n_k, d_v = k.shape[1], v.shape[2]
    out = np.zeros((batch, n_q, d_v), np.float32)
    o_part = np.zeros((batch * splits, n_q, d_v), np.float32)
    ml_part = np.zeros((batch * splits, n_q, 2), np.float32)
    row_tiles = -(-n_q // cfg.rows)
    group = np.uint64(q.shape[0] // k.shape[0])
    u = np.uint64
    threads = np.arange(cfg.threads, dtype=np.uint64)
    scale_log2 = np.float32(scale / math.log(2.0))
    width_tiles = cfg.width // 8
    for bid in range(batch * row_tiles * splits):
        split, b, kv, r0 = st.block_origin(u(bid), u(splits), u(row_tiles), causal, group)
        warps = []
        for w in range(MMA_WARPS):
            state = (
                Lanes(cfg.keys // 8, 4),  # s
                Lanes(width_tiles, 4),  # o
                Lanes(2),  # m
                Lanes(2),  # l_sum
                Lanes(width_tiles, 4),  # qf
            )
            row0 = r0 + u(w * fragments.M)
            st.start(state[4], state[1], state[2], state[3], q, b, row0, LANE, scale_log2)
            warps.append((row0, state))
        key_end, t_begin, t_end = st.key_range(u(n_k), r0, causal, split, u(splits))
        ks = np.zeros(cfg.keys * cfg.stride, np.float32)
        vs = np.zeros_like(ks)
        for t in range(int(t_begin), int(t_end)):
            k0 = u(t * cfg.keys)
            st.load_kv(ks, vs, k, v, kv, k0, key_end, threads)
            for row0, (s, o, m, l_sum, qf) in warps:
                st.warp_tile(s, o, m, l_sum, qf, ks, vs, LANE, k0, row0, u(n_q), u(n_k), causal)
        part = b * u(splits) + split
        for row0, (_, o, m, l_sum, _) in warps:
            st.finish(o, m, l_sum, out, o_part, ml_part, b, part, row0, LANE, splits > 1)
    if splits > 1:
        out = merge(o_part, ml_part, batch, splits)
    return out


def merge(o_part, ml_part, batch, splits):
    """merge.py's combination of key splits, in float32."""
    o = o_part.reshape(batch, splits, *o_part.shape[1:])
    ml = ml_part.reshape(batch, splits, *ml_part.shape[1:])
    top = ml[..., 0].max(axis=1, keepdims=True)
    with np.errstate(invalid="ignore"):
        weight = np.exp2(ml[..., 0] - top).astype(np.float32)
    weight = np.where(np.isfinite(ml[..., 0]), weight, np.float32(0.0))
    total = (weight * ml[..., 1]).sum(axis=1)
    return ((weight[..., None] * o).sum(axis=1) / total[..., None]).astype(np.float32)
