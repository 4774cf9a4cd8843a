"""The merge of key splits: a row whose keys were split across blocks (see plan.key_splits)
gets each split's partial output and (max, sum), and combines them here, as flash-decoding
does: out = sum_s o_s 2^(m_s - M) / sum_s l_s 2^(m_s - M), M the largest m_s."""

from __future__ import annotations

import math

from impls.numba_cuda.compile_with import scalar_types


def merge_splits_function(simulated: bool = False):
    """out = the key splits' partial outputs, each weighted by exp2(its max - the row's max)."""
    global cuda
    from numba import cuda

    (float32,) = scalar_types(simulated, "float32")

    def merge_splits_kernel(o_part, ml_part, out, splits):
        idx = cuda.grid(1)
        batch, n, d_v = out.shape
        if idx >= batch * n * d_v:
            return
        b = idx // (n * d_v)
        row = idx // d_v % n
        col = idx % d_v
        m_row = float32(-math.inf)
        for h in range(splits):
            m_row = max(m_row, ml_part[b * splits + h, row, 0])
        total = float32(0.0)
        acc = float32(0.0)
        for h in range(splits):
            weight = math.exp2(ml_part[b * splits + h, row, 0] - m_row)
            total += weight * ml_part[b * splits + h, row, 1]
            acc += weight * o_part[b * splits + h, row, col]
        out[b, row, col] = acc / total

    return merge_splits_kernel


def signature():
    from numba import types

    arr = types.float32[:, :, ::1]
    return types.void(arr, arr, arr, types.int64)
