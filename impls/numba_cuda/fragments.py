"""The register layout of `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32`, and a NumPy
model of it: what each of a warp's 32 lanes holds, and one warp-level product as the tensor
cores compute it. Pure Python and NumPy (no numba import): the simulator cannot run inline PTX,
so the CPU tests check the tensor-core kernel's algorithm against this model (fragment_model.py).

Layouts, with g = lane // 4 (the lane's quad, "groupID") and t = lane % 4
("threadID_in_group"), from the PTX ISA, "Matrix Fragments for mma.m16n8k8" (.tf32 variant),
and identical to CUTLASS's `MMA_Traits<SM80_16x8x8_F32TF32TF32F32_TN>`
(include/cute/atom/mma_traits_sm80.hpp; tests/test_mma_fragments.py decodes its CuTe layouts):

- A (16 x 8, row-major, 4 registers): a0 (g, t), a1 (g + 8, t), a2 (g, t + 4), a3 (g + 8, t + 4)
- B (8 x 8, k x n, column-major, 2 registers): b0 (k = t, n = g), b1 (k = t + 4, n = g)
- C, D (16 x 8, 4 registers): c0 (g, 2t), c1 (g, 2t + 1), c2 (g + 8, 2t), c3 (g + 8, 2t + 1)

The functions take and return unsigned integers (np.uint64), so that the kernel generator
compiles the same functions with numba (where mixing uint64 with int64 literals would make
float64) and the model calls them on NumPy arrays of lanes.
"""

from __future__ import annotations

import numpy as np

U1, U2, U3, U4, U8 = (np.uint64(x) for x in (1, 2, 3, 4, 8))
LANES = 32
M, N, K = 16, 8, 8  # the instruction's tile: A is M x K, B is K x N, C and D are M x N
A_REGISTERS, B_REGISTERS, C_REGISTERS = 4, 2, 4


def a_row(lane, reg):
    return (lane >> U2) + U8 * (reg & U1)


def a_col(lane, reg):
    return (lane & U3) + U4 * (reg >> U1)


def b_row(lane, reg):
    """B's k index (the reduction dimension)."""
    return (lane & U3) + U4 * reg


def b_col(lane, reg):
    """B's n index (the output column): the same for both registers."""
    return lane >> U2


def c_row(lane, reg):
    return (lane >> U2) + U8 * (reg >> U1)


def c_col(lane, reg):
    return U2 * (lane & U3) + (reg & U1)


# P V reuses the score fragment (C layout) as the A operand without moving a value between
# lanes: A register r of P is C register P_FROM_C[r]. Then A's column k' = t holds key 2t and
# k' = t + 4 key 2t + 1 of the 8 keys, a permutation of the reduction index, which is harmless
# as long as B (V) is read with the same permutation: B's row k' is key pv_key(k').
P_FROM_C = (0, 2, 1, 3)


def pv_key(k):
    """The key (of 8) whose weights sit in A column k when the C fragment is used as A."""
    return U2 * (k & U3) + (k >> U2)


def tf32(x):
    """cvt.rna.tf32.f32 on float32 values: round to nearest, ties away from zero, to 10 bits of
    mantissa (the low 13 bits cleared). Adding half of the dropped range to the magnitude
    bits carries into the exponent exactly as rounding away does; inf and NaN stay as they are."""
    x = np.asarray(x, np.float32)
    bits = x.view(np.uint32)
    rounded = ((bits + np.uint32(0x1000)) & np.uint32(0xFFFFE000)).view(np.float32)
    return np.where(np.isfinite(x), rounded, x).astype(np.float32)


def split_tf32(x):
    """x = hi + lo with both TF32: hi keeps 11 significant bits, lo the next 11 (3xTF32)."""
    x = np.asarray(x, np.float32)
    hi = tf32(x)
    return hi, tf32(x - hi)


def lane_indices():
    return np.arange(LANES, dtype=np.uint64)


def gather(matrix, row_of, col_of, registers):
    """The fragments of a matrix: (lanes, registers) values, each lane's per the layout maps."""
    lanes = lane_indices()
    return np.stack(
        [
            matrix[row_of(lanes, np.uint64(r)), col_of(lanes, np.uint64(r))]
            for r in range(registers)
        ],
        axis=1,
    )


def scatter(fragments, row_of, col_of, shape):
    """The matrix the (lanes, registers) fragments hold; the inverse of gather."""
    lanes = lane_indices()
    matrix = np.full(shape, np.nan, dtype=fragments.dtype)
    for r in range(fragments.shape[1]):
        matrix[row_of(lanes, np.uint64(r)), col_of(lanes, np.uint64(r))] = fragments[:, r]
    return matrix


def warp_mma(a, b, c):
    """One mma.sync m16n8k8 tf32 over a warp: fragments a (32, 4), b (32, 2), c (32, 4) in, d
    (32, 4) out, d = A B + C. The inputs are rounded to TF32 as the kernel's cvt.rna does; the
    products of two TF32 values are exact in float32 and the model sums them exactly, then
    rounds once to float32 (the hardware's float32 accumulation rounds about as much)."""
    a_mat = scatter(tf32(a), a_row, a_col, (M, K)).astype(np.float64)
    b_mat = scatter(tf32(b), b_row, b_col, (K, N)).astype(np.float64)
    c_mat = scatter(np.asarray(c, np.float32), c_row, c_col, (M, N)).astype(np.float64)
    return gather((a_mat @ b_mat + c_mat).astype(np.float32), c_row, c_col, C_REGISTERS)
