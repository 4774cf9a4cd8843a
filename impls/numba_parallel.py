"""Fused attention in Numba: prange over query-row blocks, tiled online softmax (FlashAttention).

The algorithm. For a query row q_i (pre-scaled by scale * log2(e), so that exp(scale q.k) =
2^s) the keys are visited in blocks; the row keeps a running maximum m, a running sum l and an
unnormalised output o, and for each block of scores s_k = q_i . k:

    m_new = max(m, max_k s_k);  alpha = 2^(m - m_new);  p_k = 2^(s_k - m_new)
    l = alpha * l + sum_k p_k;  o = alpha * o + sum_k p_k v_k;  m = m_new

and at the end out_i = o / l. Every exponent is at most 0, so nothing overflows; the n_q x n_k
score matrix is never built (extra memory: packed copies of q, k, v and the output, O(n d),
plus one score tile per task).

What each loop owns (the tiled path, `_attention_kernel`): a parallel task is one query block
of one batch entry; for each key block it computes the score tile (`_scores_block`: ROWS rows x
STRIP columns held in registers), the online-softmax step over it in place (`_softmax_tile`),
and adds p @ v to its rows (`_accumulate_block`). With the causal mask, key blocks wholly above
the diagonal are skipped and masked columns left out by loop bounds (never by -inf scores, which
the fast-math flags would not allow). Grouped-query heads read the key/value entry b // group.
A few query rows per key/value head (decode) take `_decode_kernel`: key ranges split across
tasks (split-K), k and v read once in place, the ranges' states merged at the end.
docs/kernels/numba_parallel.md has the design in full; docs/PERFORMANCE.md the figures.

What makes it fast on a CPU:
- Register-tiled products (5 rows x two AVX2 registers, i.e. 16 float32 or 8 float64 columns,
  held in local scalars while looping over the reduction dimension) that LLVM's SLP vectoriser
  turns into FMA code at about the speed of OpenBLAS's GEMM. Numba switches SLP off by default;
  `_slp_vectorizer_on` switches it on for the one compilation and restores the setting.
- Fast-math flags without `reassoc` on the products (with it LLVM vectorises the reduction loop
  instead and spills); the softmax pass, whose max and sum must vectorise, does get `reassoc`,
  and its max is LLVM's maxnum (Numba's `max` does not vectorise).
- A vectorisable exp2 (range reduction + polynomial, 2^n built from exponent bits) instead of
  libm's scalar exp.
- k and v packed per key block into contiguous strips (zero padded); each product call does a
  whole tile, so the calls (kept out of line: inlining nearly doubled compile time) cost nothing.
  The packing (and q's scaling) is part of every call, done in parallel by `_pack_inputs`:
  `prepare` only allocates and compiles, so a timed `run` is the whole call.
- float32 tiles with all BLOCK_KEYS columns visible to every row (all but partial and causal
  diagonal tiles) take a softmax step whose loops have that compile-time length (fully
  unrolled, no remainder loops or masking).
- One compilation per dtype and argument kind, cached on disk; `causal` and the block count are
  runtime arguments.
"""

# The microkernels below are written out in full, several statements a line (fmt: off there).
# ruff: noqa: E702

from __future__ import annotations

import contextlib
import math

import numpy as np

try:
    import numba
    from llvmlite import ir as llvmir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic, overload
except ImportError as exc:  # numba is a hard dependency; keep `import impls` working regardless
    numba = None
    _NUMBA_IMPORT_ERROR = f"numba cannot be imported: {exc}"
else:
    _NUMBA_IMPORT_ERROR = None

NAME = "numba_parallel"
DESCRIPTION = "Numba prange, fused tiled online softmax (FlashAttention-style), SLP-vectorised"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cpu"

ROWS = 5  # rows per microkernel: fixed by the written-out microkernels below
STRIP = {"float32": 16, "float64": 8}  # columns per microkernel (two AVX2 registers): likewise
DECODE_TILE_KEYS = 64  # keys per tile of the decode path: their scores stay in registers/L1
DECODE_MAX_ROWS = 32  # query rows per key/value head up to which the decode path runs (measured
# 1.3-7x faster than the tiled path at 4-32 rows, d = 128, 4096-16384 keys)
DECODE_MIN_SPLIT_KEYS = 256  # the shortest key range a decode task takes
EMPTY_MAX = -1e30  # the running maximum of a key range with no keys: far below any score
BLOCK_KEYS = 256  # keys per key block (a multiple of both strips); 128 and 64 measured slower
# Query rows per parallel task, nominally: the largest of MAX_BLOCK_QUERIES, its halves, down
# to BLOCK_QUERIES, that still gives every thread TASKS_PER_THREAD tasks (BLOCK_QUERIES itself
# with the causal mask). `query_blocks` turns it into a count of blocks of equal size.
BLOCK_QUERIES = {"float32": 64, "float64": 32}
MAX_BLOCK_QUERIES = 256
TASKS_PER_THREAD = 8

# Fast-math flags of the microkernels: everything but `reassoc` (see the module docstring).
KERNEL_FLAGS = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}
SOFTMAX_FLAGS = KERNEL_FLAGS | {"reassoc"}

# 2^f on [-0.5, 0.5]: Chebyshev fits, relative error 2.6e-9 (float32) and < 1e-15 (float64).
EXP2_F32 = (
    0.9999999999595485,
    0.6931472067106198,
    0.24022651213595642,
    0.05550327214209506,
    0.009618025602898463,
    0.001340043216532545,
    0.00015469731995488832,
)
EXP2_F64 = (
    1.0,
    0.6931471805599493,
    0.24022650695910847,
    0.05550410866462554,
    0.009618129107298649,
    0.0013333558185157194,
    0.00015403530867208687,
    1.5252700137065192e-05,
    1.3215218473446369e-06,
    1.0191198409435894e-07,
    7.11241788166262e-09,
    2.5769630006023985e-10,
)


def unavailable_reason() -> str | None:
    return _NUMBA_IMPORT_ERROR


@contextlib.contextmanager
def _slp_vectorizer_on():
    """Switch on LLVM's SLP vectoriser while compiling (Numba reads the flag per compilation)."""
    previous = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = previous


def _exp2(x):
    """2 ** x for x <= 0, vectorisable; implemented per dtype by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


def _scores_block(q, k_strips, n_strips, s):
    """s[:, :n_strips * strip] = q @ k block; per dtype by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


def _accumulate_block(p, n_cols, v_strips, out, rescale):
    """out = rescale[:, None] * out + p[:, :n_cols] @ v block; per dtype by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


if numba is not None:

    @intrinsic
    def _reinterpret(typingctx, value):
        """The same bits as the other type of that width: int32 <-> float32, int64 <-> float64
        (Numba has no scalar bit-cast)."""
        other = {
            types.int32: types.float32,
            types.float32: types.int32,
            types.int64: types.float64,
            types.float64: types.int64,
        }
        if value not in other:
            return None

        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], context.get_value_type(signature.return_type))

        return other[value](value), codegen

    @intrinsic
    def _maxnum(typingctx, a, b):
        """max(a, b) as LLVM's maxnum: LLVM vectorises it as a reduction (Numba's max it does not,
        as that lowers to a compare and a select without fast-math flags)."""
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, signature, args):
            ty = args[0].type
            name = f"llvm.maxnum.f{signature.return_type.bitwidth}"
            fnty = llvmir.FunctionType(ty, [ty, ty])
            fn = cgutils.get_or_insert_function(builder.module, fnty, name)
            return builder.call(fn, args)

        return a(a, b), codegen

    def _exp2_f32(x):
        """2^x = 2^n * 2^f, n = round(x), f in [-0.5, 0.5]; 2^f by a degree-6 polynomial.

        x is clamped at -127, where the exponent field of 2^n is 0, so any x at or below it
        gives exactly 0 (never NaN or inf, whatever the distance to the row maximum).
        """
        x = max(x, np.float32(-127.0))
        n = np.floor(x + np.float32(0.5))
        f = x - n
        p = np.float32(EXP2_F32[6])
        p = p * f + np.float32(EXP2_F32[5])
        p = p * f + np.float32(EXP2_F32[4])
        p = p * f + np.float32(EXP2_F32[3])
        p = p * f + np.float32(EXP2_F32[2])
        p = p * f + np.float32(EXP2_F32[1])
        p = p * f + np.float32(EXP2_F32[0])
        return p * _reinterpret(np.int32((n + np.float32(127.0)) * np.float32(2.0**23)))

    def _exp2_f64(x):
        """As _exp2_f32 for float64: degree-11 polynomial, clamped at -1023."""
        x = max(x, -1023.0)
        n = np.floor(x + 0.5)
        f = x - n
        p = EXP2_F64[11]
        p = p * f + EXP2_F64[10]
        p = p * f + EXP2_F64[9]
        p = p * f + EXP2_F64[8]
        p = p * f + EXP2_F64[7]
        p = p * f + EXP2_F64[6]
        p = p * f + EXP2_F64[5]
        p = p * f + EXP2_F64[4]
        p = p * f + EXP2_F64[3]
        p = p * f + EXP2_F64[2]
        p = p * f + EXP2_F64[1]
        p = p * f + EXP2_F64[0]
        # n + 1023 + 2^52 holds n + 1023 in its low mantissa bits; shifted up they are the
        # exponent of 2^n. (AVX2 has no vector float64 -> int64 conversion to do it with.)
        return p * _reinterpret(_reinterpret(n + (1023.0 + 2.0**52)) << 52)

    @overload(_exp2, inline="always")
    def _exp2_overload(x):
        if x == types.float32:
            return _exp2_f32
        if x == types.float64:
            return _exp2_f64
        return None

    # Register-tiled products: 5 rows x two AVX2 registers (16 float32 or 8 float64 columns),
    # 10 accumulators. The SLP vectoriser keeps all the rows' broadcasts live across both column
    # registers, so 5 rows fill AVX2's 16 registers exactly (10 + 5 + 1) and 6 rows spill;
    # 5 rows measured 4-6% faster than 4 single-threaded. Each call does a whole tile, so the
    # calls (not inlined: that nearly doubled compile time) cost nothing measurable.

    # fmt: off
    @njit(fastmath=KERNEL_FLAGS)
    def _scores_5x16(q, k_strips, n_strips, s):
        """s[:, :n_strips * 16] = q @ (k_strips[0] | k_strips[1] | ...), 5 x 16 at a time."""
        for strip in range(n_strips):
            k_strip = k_strips[strip]
            for r in range(0, q.shape[0], 5):
                q0 = q[r]; q1 = q[r + 1]; q2 = q[r + 2]; q3 = q[r + 3]; q4 = q[r + 4]
                k = k_strip[0]
                x = q0[0]
                a0_0 = x * k[0]; a0_1 = x * k[1]; a0_2 = x * k[2]; a0_3 = x * k[3]; a0_4 = x * k[4]
                a0_5 = x * k[5]; a0_6 = x * k[6]; a0_7 = x * k[7]; a0_8 = x * k[8]; a0_9 = x * k[9]
                a0_10 = x * k[10]; a0_11 = x * k[11]; a0_12 = x * k[12]; a0_13 = x * k[13]
                a0_14 = x * k[14]; a0_15 = x * k[15]
                x = q1[0]
                a1_0 = x * k[0]; a1_1 = x * k[1]; a1_2 = x * k[2]; a1_3 = x * k[3]; a1_4 = x * k[4]
                a1_5 = x * k[5]; a1_6 = x * k[6]; a1_7 = x * k[7]; a1_8 = x * k[8]; a1_9 = x * k[9]
                a1_10 = x * k[10]; a1_11 = x * k[11]; a1_12 = x * k[12]; a1_13 = x * k[13]
                a1_14 = x * k[14]; a1_15 = x * k[15]
                x = q2[0]
                a2_0 = x * k[0]; a2_1 = x * k[1]; a2_2 = x * k[2]; a2_3 = x * k[3]; a2_4 = x * k[4]
                a2_5 = x * k[5]; a2_6 = x * k[6]; a2_7 = x * k[7]; a2_8 = x * k[8]; a2_9 = x * k[9]
                a2_10 = x * k[10]; a2_11 = x * k[11]; a2_12 = x * k[12]; a2_13 = x * k[13]
                a2_14 = x * k[14]; a2_15 = x * k[15]
                x = q3[0]
                a3_0 = x * k[0]; a3_1 = x * k[1]; a3_2 = x * k[2]; a3_3 = x * k[3]; a3_4 = x * k[4]
                a3_5 = x * k[5]; a3_6 = x * k[6]; a3_7 = x * k[7]; a3_8 = x * k[8]; a3_9 = x * k[9]
                a3_10 = x * k[10]; a3_11 = x * k[11]; a3_12 = x * k[12]; a3_13 = x * k[13]
                a3_14 = x * k[14]; a3_15 = x * k[15]
                x = q4[0]
                a4_0 = x * k[0]; a4_1 = x * k[1]; a4_2 = x * k[2]; a4_3 = x * k[3]; a4_4 = x * k[4]
                a4_5 = x * k[5]; a4_6 = x * k[6]; a4_7 = x * k[7]; a4_8 = x * k[8]; a4_9 = x * k[9]
                a4_10 = x * k[10]; a4_11 = x * k[11]; a4_12 = x * k[12]; a4_13 = x * k[13]
                a4_14 = x * k[14]; a4_15 = x * k[15]
                for kk in range(1, k_strip.shape[0]):
                    k = k_strip[kk]
                    x = q0[kk]
                    a0_0 += x * k[0]; a0_1 += x * k[1]; a0_2 += x * k[2]; a0_3 += x * k[3]
                    a0_4 += x * k[4]; a0_5 += x * k[5]; a0_6 += x * k[6]; a0_7 += x * k[7]
                    a0_8 += x * k[8]; a0_9 += x * k[9]; a0_10 += x * k[10]; a0_11 += x * k[11]
                    a0_12 += x * k[12]; a0_13 += x * k[13]; a0_14 += x * k[14]; a0_15 += x * k[15]
                    x = q1[kk]
                    a1_0 += x * k[0]; a1_1 += x * k[1]; a1_2 += x * k[2]; a1_3 += x * k[3]
                    a1_4 += x * k[4]; a1_5 += x * k[5]; a1_6 += x * k[6]; a1_7 += x * k[7]
                    a1_8 += x * k[8]; a1_9 += x * k[9]; a1_10 += x * k[10]; a1_11 += x * k[11]
                    a1_12 += x * k[12]; a1_13 += x * k[13]; a1_14 += x * k[14]; a1_15 += x * k[15]
                    x = q2[kk]
                    a2_0 += x * k[0]; a2_1 += x * k[1]; a2_2 += x * k[2]; a2_3 += x * k[3]
                    a2_4 += x * k[4]; a2_5 += x * k[5]; a2_6 += x * k[6]; a2_7 += x * k[7]
                    a2_8 += x * k[8]; a2_9 += x * k[9]; a2_10 += x * k[10]; a2_11 += x * k[11]
                    a2_12 += x * k[12]; a2_13 += x * k[13]; a2_14 += x * k[14]; a2_15 += x * k[15]
                    x = q3[kk]
                    a3_0 += x * k[0]; a3_1 += x * k[1]; a3_2 += x * k[2]; a3_3 += x * k[3]
                    a3_4 += x * k[4]; a3_5 += x * k[5]; a3_6 += x * k[6]; a3_7 += x * k[7]
                    a3_8 += x * k[8]; a3_9 += x * k[9]; a3_10 += x * k[10]; a3_11 += x * k[11]
                    a3_12 += x * k[12]; a3_13 += x * k[13]; a3_14 += x * k[14]; a3_15 += x * k[15]
                    x = q4[kk]
                    a4_0 += x * k[0]; a4_1 += x * k[1]; a4_2 += x * k[2]; a4_3 += x * k[3]
                    a4_4 += x * k[4]; a4_5 += x * k[5]; a4_6 += x * k[6]; a4_7 += x * k[7]
                    a4_8 += x * k[8]; a4_9 += x * k[9]; a4_10 += x * k[10]; a4_11 += x * k[11]
                    a4_12 += x * k[12]; a4_13 += x * k[13]; a4_14 += x * k[14]; a4_15 += x * k[15]
                col = strip * 16
                s0 = s[r, col:]; s1 = s[r + 1, col:]; s2 = s[r + 2, col:]; s3 = s[r + 3, col:]
                s4 = s[r + 4, col:]
                s0[0] = a0_0; s0[1] = a0_1; s0[2] = a0_2; s0[3] = a0_3; s0[4] = a0_4; s0[5] = a0_5
                s0[6] = a0_6; s0[7] = a0_7; s0[8] = a0_8; s0[9] = a0_9; s0[10] = a0_10
                s0[11] = a0_11; s0[12] = a0_12; s0[13] = a0_13; s0[14] = a0_14; s0[15] = a0_15
                s1[0] = a1_0; s1[1] = a1_1; s1[2] = a1_2; s1[3] = a1_3; s1[4] = a1_4; s1[5] = a1_5
                s1[6] = a1_6; s1[7] = a1_7; s1[8] = a1_8; s1[9] = a1_9; s1[10] = a1_10
                s1[11] = a1_11; s1[12] = a1_12; s1[13] = a1_13; s1[14] = a1_14; s1[15] = a1_15
                s2[0] = a2_0; s2[1] = a2_1; s2[2] = a2_2; s2[3] = a2_3; s2[4] = a2_4; s2[5] = a2_5
                s2[6] = a2_6; s2[7] = a2_7; s2[8] = a2_8; s2[9] = a2_9; s2[10] = a2_10
                s2[11] = a2_11; s2[12] = a2_12; s2[13] = a2_13; s2[14] = a2_14; s2[15] = a2_15
                s3[0] = a3_0; s3[1] = a3_1; s3[2] = a3_2; s3[3] = a3_3; s3[4] = a3_4; s3[5] = a3_5
                s3[6] = a3_6; s3[7] = a3_7; s3[8] = a3_8; s3[9] = a3_9; s3[10] = a3_10
                s3[11] = a3_11; s3[12] = a3_12; s3[13] = a3_13; s3[14] = a3_14; s3[15] = a3_15
                s4[0] = a4_0; s4[1] = a4_1; s4[2] = a4_2; s4[3] = a4_3; s4[4] = a4_4; s4[5] = a4_5
                s4[6] = a4_6; s4[7] = a4_7; s4[8] = a4_8; s4[9] = a4_9; s4[10] = a4_10
                s4[11] = a4_11; s4[12] = a4_12; s4[13] = a4_13; s4[14] = a4_14; s4[15] = a4_15

    @njit(fastmath=KERNEL_FLAGS)
    def _accumulate_5x16(p, n_cols, v_strips, out, rescale):
        """out = rescale[:, None] * out + p[:, :n_cols] @ v_strips[:, :n_cols], 5 x 16 at a time."""
        for strip in range(v_strips.shape[0]):
            v_strip = v_strips[strip]
            for r in range(0, p.shape[0], 5):
                p0 = p[r]; p1 = p[r + 1]; p2 = p[r + 2]; p3 = p[r + 3]; p4 = p[r + 4]
                col = strip * 16
                o0 = out[r, col:]; o1 = out[r + 1, col:]; o2 = out[r + 2, col:]
                o3 = out[r + 3, col:]; o4 = out[r + 4, col:]
                x = rescale[r]
                a0_0 = o0[0] * x; a0_1 = o0[1] * x; a0_2 = o0[2] * x; a0_3 = o0[3] * x
                a0_4 = o0[4] * x; a0_5 = o0[5] * x; a0_6 = o0[6] * x; a0_7 = o0[7] * x
                a0_8 = o0[8] * x; a0_9 = o0[9] * x; a0_10 = o0[10] * x; a0_11 = o0[11] * x
                a0_12 = o0[12] * x; a0_13 = o0[13] * x; a0_14 = o0[14] * x; a0_15 = o0[15] * x
                x = rescale[r + 1]
                a1_0 = o1[0] * x; a1_1 = o1[1] * x; a1_2 = o1[2] * x; a1_3 = o1[3] * x
                a1_4 = o1[4] * x; a1_5 = o1[5] * x; a1_6 = o1[6] * x; a1_7 = o1[7] * x
                a1_8 = o1[8] * x; a1_9 = o1[9] * x; a1_10 = o1[10] * x; a1_11 = o1[11] * x
                a1_12 = o1[12] * x; a1_13 = o1[13] * x; a1_14 = o1[14] * x; a1_15 = o1[15] * x
                x = rescale[r + 2]
                a2_0 = o2[0] * x; a2_1 = o2[1] * x; a2_2 = o2[2] * x; a2_3 = o2[3] * x
                a2_4 = o2[4] * x; a2_5 = o2[5] * x; a2_6 = o2[6] * x; a2_7 = o2[7] * x
                a2_8 = o2[8] * x; a2_9 = o2[9] * x; a2_10 = o2[10] * x; a2_11 = o2[11] * x
                a2_12 = o2[12] * x; a2_13 = o2[13] * x; a2_14 = o2[14] * x; a2_15 = o2[15] * x
                x = rescale[r + 3]
                a3_0 = o3[0] * x; a3_1 = o3[1] * x; a3_2 = o3[2] * x; a3_3 = o3[3] * x
                a3_4 = o3[4] * x; a3_5 = o3[5] * x; a3_6 = o3[6] * x; a3_7 = o3[7] * x
                a3_8 = o3[8] * x; a3_9 = o3[9] * x; a3_10 = o3[10] * x; a3_11 = o3[11] * x
                a3_12 = o3[12] * x; a3_13 = o3[13] * x; a3_14 = o3[14] * x; a3_15 = o3[15] * x
                x = rescale[r + 4]
                a4_0 = o4[0] * x; a4_1 = o4[1] * x; a4_2 = o4[2] * x; a4_3 = o4[3] * x
                a4_4 = o4[4] * x; a4_5 = o4[5] * x; a4_6 = o4[6] * x; a4_7 = o4[7] * x
                a4_8 = o4[8] * x; a4_9 = o4[9] * x; a4_10 = o4[10] * x; a4_11 = o4[11] * x
                a4_12 = o4[12] * x; a4_13 = o4[13] * x; a4_14 = o4[14] * x; a4_15 = o4[15] * x
                for c in range(n_cols):
                    v = v_strip[c]
                    x = p0[c]
                    a0_0 += x * v[0]; a0_1 += x * v[1]; a0_2 += x * v[2]; a0_3 += x * v[3]
                    a0_4 += x * v[4]; a0_5 += x * v[5]; a0_6 += x * v[6]; a0_7 += x * v[7]
                    a0_8 += x * v[8]; a0_9 += x * v[9]; a0_10 += x * v[10]; a0_11 += x * v[11]
                    a0_12 += x * v[12]; a0_13 += x * v[13]; a0_14 += x * v[14]; a0_15 += x * v[15]
                    x = p1[c]
                    a1_0 += x * v[0]; a1_1 += x * v[1]; a1_2 += x * v[2]; a1_3 += x * v[3]
                    a1_4 += x * v[4]; a1_5 += x * v[5]; a1_6 += x * v[6]; a1_7 += x * v[7]
                    a1_8 += x * v[8]; a1_9 += x * v[9]; a1_10 += x * v[10]; a1_11 += x * v[11]
                    a1_12 += x * v[12]; a1_13 += x * v[13]; a1_14 += x * v[14]; a1_15 += x * v[15]
                    x = p2[c]
                    a2_0 += x * v[0]; a2_1 += x * v[1]; a2_2 += x * v[2]; a2_3 += x * v[3]
                    a2_4 += x * v[4]; a2_5 += x * v[5]; a2_6 += x * v[6]; a2_7 += x * v[7]
                    a2_8 += x * v[8]; a2_9 += x * v[9]; a2_10 += x * v[10]; a2_11 += x * v[11]
                    a2_12 += x * v[12]; a2_13 += x * v[13]; a2_14 += x * v[14]; a2_15 += x * v[15]
                    x = p3[c]
                    a3_0 += x * v[0]; a3_1 += x * v[1]; a3_2 += x * v[2]; a3_3 += x * v[3]
                    a3_4 += x * v[4]; a3_5 += x * v[5]; a3_6 += x * v[6]; a3_7 += x * v[7]
                    a3_8 += x * v[8]; a3_9 += x * v[9]; a3_10 += x * v[10]; a3_11 += x * v[11]
                    a3_12 += x * v[12]; a3_13 += x * v[13]; a3_14 += x * v[14]; a3_15 += x * v[15]
                    x = p4[c]
                    a4_0 += x * v[0]; a4_1 += x * v[1]; a4_2 += x * v[2]; a4_3 += x * v[3]
                    a4_4 += x * v[4]; a4_5 += x * v[5]; a4_6 += x * v[6]; a4_7 += x * v[7]
                    a4_8 += x * v[8]; a4_9 += x * v[9]; a4_10 += x * v[10]; a4_11 += x * v[11]
                    a4_12 += x * v[12]; a4_13 += x * v[13]; a4_14 += x * v[14]; a4_15 += x * v[15]
                o0[0] = a0_0; o0[1] = a0_1; o0[2] = a0_2; o0[3] = a0_3; o0[4] = a0_4; o0[5] = a0_5
                o0[6] = a0_6; o0[7] = a0_7; o0[8] = a0_8; o0[9] = a0_9; o0[10] = a0_10
                o0[11] = a0_11; o0[12] = a0_12; o0[13] = a0_13; o0[14] = a0_14; o0[15] = a0_15
                o1[0] = a1_0; o1[1] = a1_1; o1[2] = a1_2; o1[3] = a1_3; o1[4] = a1_4; o1[5] = a1_5
                o1[6] = a1_6; o1[7] = a1_7; o1[8] = a1_8; o1[9] = a1_9; o1[10] = a1_10
                o1[11] = a1_11; o1[12] = a1_12; o1[13] = a1_13; o1[14] = a1_14; o1[15] = a1_15
                o2[0] = a2_0; o2[1] = a2_1; o2[2] = a2_2; o2[3] = a2_3; o2[4] = a2_4; o2[5] = a2_5
                o2[6] = a2_6; o2[7] = a2_7; o2[8] = a2_8; o2[9] = a2_9; o2[10] = a2_10
                o2[11] = a2_11; o2[12] = a2_12; o2[13] = a2_13; o2[14] = a2_14; o2[15] = a2_15
                o3[0] = a3_0; o3[1] = a3_1; o3[2] = a3_2; o3[3] = a3_3; o3[4] = a3_4; o3[5] = a3_5
                o3[6] = a3_6; o3[7] = a3_7; o3[8] = a3_8; o3[9] = a3_9; o3[10] = a3_10
                o3[11] = a3_11; o3[12] = a3_12; o3[13] = a3_13; o3[14] = a3_14; o3[15] = a3_15
                o4[0] = a4_0; o4[1] = a4_1; o4[2] = a4_2; o4[3] = a4_3; o4[4] = a4_4; o4[5] = a4_5
                o4[6] = a4_6; o4[7] = a4_7; o4[8] = a4_8; o4[9] = a4_9; o4[10] = a4_10
                o4[11] = a4_11; o4[12] = a4_12; o4[13] = a4_13; o4[14] = a4_14; o4[15] = a4_15

    @njit(fastmath=KERNEL_FLAGS)
    def _scores_5x8(q, k_strips, n_strips, s):
        """s[:, :n_strips * 8] = q @ (k_strips[0] | k_strips[1] | ...), 5 x 8 at a time."""
        for strip in range(n_strips):
            k_strip = k_strips[strip]
            for r in range(0, q.shape[0], 5):
                q0 = q[r]; q1 = q[r + 1]; q2 = q[r + 2]; q3 = q[r + 3]; q4 = q[r + 4]
                k = k_strip[0]
                x = q0[0]
                a0_0 = x * k[0]; a0_1 = x * k[1]; a0_2 = x * k[2]; a0_3 = x * k[3]; a0_4 = x * k[4]
                a0_5 = x * k[5]; a0_6 = x * k[6]; a0_7 = x * k[7]
                x = q1[0]
                a1_0 = x * k[0]; a1_1 = x * k[1]; a1_2 = x * k[2]; a1_3 = x * k[3]; a1_4 = x * k[4]
                a1_5 = x * k[5]; a1_6 = x * k[6]; a1_7 = x * k[7]
                x = q2[0]
                a2_0 = x * k[0]; a2_1 = x * k[1]; a2_2 = x * k[2]; a2_3 = x * k[3]; a2_4 = x * k[4]
                a2_5 = x * k[5]; a2_6 = x * k[6]; a2_7 = x * k[7]
                x = q3[0]
                a3_0 = x * k[0]; a3_1 = x * k[1]; a3_2 = x * k[2]; a3_3 = x * k[3]; a3_4 = x * k[4]
                a3_5 = x * k[5]; a3_6 = x * k[6]; a3_7 = x * k[7]
                x = q4[0]
                a4_0 = x * k[0]; a4_1 = x * k[1]; a4_2 = x * k[2]; a4_3 = x * k[3]; a4_4 = x * k[4]
                a4_5 = x * k[5]; a4_6 = x * k[6]; a4_7 = x * k[7]
                for kk in range(1, k_strip.shape[0]):
                    k = k_strip[kk]
                    x = q0[kk]
                    a0_0 += x * k[0]; a0_1 += x * k[1]; a0_2 += x * k[2]; a0_3 += x * k[3]
                    a0_4 += x * k[4]; a0_5 += x * k[5]; a0_6 += x * k[6]; a0_7 += x * k[7]
                    x = q1[kk]
                    a1_0 += x * k[0]; a1_1 += x * k[1]; a1_2 += x * k[2]; a1_3 += x * k[3]
                    a1_4 += x * k[4]; a1_5 += x * k[5]; a1_6 += x * k[6]; a1_7 += x * k[7]
                    x = q2[kk]
                    a2_0 += x * k[0]; a2_1 += x * k[1]; a2_2 += x * k[2]; a2_3 += x * k[3]
                    a2_4 += x * k[4]; a2_5 += x * k[5]; a2_6 += x * k[6]; a2_7 += x * k[7]
                    x = q3[kk]
                    a3_0 += x * k[0]; a3_1 += x * k[1]; a3_2 += x * k[2]; a3_3 += x * k[3]
                    a3_4 += x * k[4]; a3_5 += x * k[5]; a3_6 += x * k[6]; a3_7 += x * k[7]
                    x = q4[kk]
                    a4_0 += x * k[0]; a4_1 += x * k[1]; a4_2 += x * k[2]; a4_3 += x * k[3]
                    a4_4 += x * k[4]; a4_5 += x * k[5]; a4_6 += x * k[6]; a4_7 += x * k[7]
                col = strip * 8
                s0 = s[r, col:]; s1 = s[r + 1, col:]; s2 = s[r + 2, col:]; s3 = s[r + 3, col:]
                s4 = s[r + 4, col:]
                s0[0] = a0_0; s0[1] = a0_1; s0[2] = a0_2; s0[3] = a0_3; s0[4] = a0_4; s0[5] = a0_5
                s0[6] = a0_6; s0[7] = a0_7
                s1[0] = a1_0; s1[1] = a1_1; s1[2] = a1_2; s1[3] = a1_3; s1[4] = a1_4; s1[5] = a1_5
                s1[6] = a1_6; s1[7] = a1_7
                s2[0] = a2_0; s2[1] = a2_1; s2[2] = a2_2; s2[3] = a2_3; s2[4] = a2_4; s2[5] = a2_5
                s2[6] = a2_6; s2[7] = a2_7
                s3[0] = a3_0; s3[1] = a3_1; s3[2] = a3_2; s3[3] = a3_3; s3[4] = a3_4; s3[5] = a3_5
                s3[6] = a3_6; s3[7] = a3_7
                s4[0] = a4_0; s4[1] = a4_1; s4[2] = a4_2; s4[3] = a4_3; s4[4] = a4_4; s4[5] = a4_5
                s4[6] = a4_6; s4[7] = a4_7

    @njit(fastmath=KERNEL_FLAGS)
    def _accumulate_5x8(p, n_cols, v_strips, out, rescale):
        """out = rescale[:, None] * out + p[:, :n_cols] @ v_strips[:, :n_cols], 5 x 8 at a time."""
        for strip in range(v_strips.shape[0]):
            v_strip = v_strips[strip]
            for r in range(0, p.shape[0], 5):
                p0 = p[r]; p1 = p[r + 1]; p2 = p[r + 2]; p3 = p[r + 3]; p4 = p[r + 4]
                col = strip * 8
                o0 = out[r, col:]; o1 = out[r + 1, col:]; o2 = out[r + 2, col:]
                o3 = out[r + 3, col:]; o4 = out[r + 4, col:]
                x = rescale[r]
                a0_0 = o0[0] * x; a0_1 = o0[1] * x; a0_2 = o0[2] * x; a0_3 = o0[3] * x
                a0_4 = o0[4] * x; a0_5 = o0[5] * x; a0_6 = o0[6] * x; a0_7 = o0[7] * x
                x = rescale[r + 1]
                a1_0 = o1[0] * x; a1_1 = o1[1] * x; a1_2 = o1[2] * x; a1_3 = o1[3] * x
                a1_4 = o1[4] * x; a1_5 = o1[5] * x; a1_6 = o1[6] * x; a1_7 = o1[7] * x
                x = rescale[r + 2]
                a2_0 = o2[0] * x; a2_1 = o2[1] * x; a2_2 = o2[2] * x; a2_3 = o2[3] * x
                a2_4 = o2[4] * x; a2_5 = o2[5] * x; a2_6 = o2[6] * x; a2_7 = o2[7] * x
                x = rescale[r + 3]
                a3_0 = o3[0] * x; a3_1 = o3[1] * x; a3_2 = o3[2] * x; a3_3 = o3[3] * x
                a3_4 = o3[4] * x; a3_5 = o3[5] * x; a3_6 = o3[6] * x; a3_7 = o3[7] * x
                x = rescale[r + 4]
                a4_0 = o4[0] * x; a4_1 = o4[1] * x; a4_2 = o4[2] * x; a4_3 = o4[3] * x
                a4_4 = o4[4] * x; a4_5 = o4[5] * x; a4_6 = o4[6] * x; a4_7 = o4[7] * x
                for c in range(n_cols):
                    v = v_strip[c]
                    x = p0[c]
                    a0_0 += x * v[0]; a0_1 += x * v[1]; a0_2 += x * v[2]; a0_3 += x * v[3]
                    a0_4 += x * v[4]; a0_5 += x * v[5]; a0_6 += x * v[6]; a0_7 += x * v[7]
                    x = p1[c]
                    a1_0 += x * v[0]; a1_1 += x * v[1]; a1_2 += x * v[2]; a1_3 += x * v[3]
                    a1_4 += x * v[4]; a1_5 += x * v[5]; a1_6 += x * v[6]; a1_7 += x * v[7]
                    x = p2[c]
                    a2_0 += x * v[0]; a2_1 += x * v[1]; a2_2 += x * v[2]; a2_3 += x * v[3]
                    a2_4 += x * v[4]; a2_5 += x * v[5]; a2_6 += x * v[6]; a2_7 += x * v[7]
                    x = p3[c]
                    a3_0 += x * v[0]; a3_1 += x * v[1]; a3_2 += x * v[2]; a3_3 += x * v[3]
                    a3_4 += x * v[4]; a3_5 += x * v[5]; a3_6 += x * v[6]; a3_7 += x * v[7]
                    x = p4[c]
                    a4_0 += x * v[0]; a4_1 += x * v[1]; a4_2 += x * v[2]; a4_3 += x * v[3]
                    a4_4 += x * v[4]; a4_5 += x * v[5]; a4_6 += x * v[6]; a4_7 += x * v[7]
                o0[0] = a0_0; o0[1] = a0_1; o0[2] = a0_2; o0[3] = a0_3; o0[4] = a0_4; o0[5] = a0_5
                o0[6] = a0_6; o0[7] = a0_7
                o1[0] = a1_0; o1[1] = a1_1; o1[2] = a1_2; o1[3] = a1_3; o1[4] = a1_4; o1[5] = a1_5
                o1[6] = a1_6; o1[7] = a1_7
                o2[0] = a2_0; o2[1] = a2_1; o2[2] = a2_2; o2[3] = a2_3; o2[4] = a2_4; o2[5] = a2_5
                o2[6] = a2_6; o2[7] = a2_7
                o3[0] = a3_0; o3[1] = a3_1; o3[2] = a3_2; o3[3] = a3_3; o3[4] = a3_4; o3[5] = a3_5
                o3[6] = a3_6; o3[7] = a3_7
                o4[0] = a4_0; o4[1] = a4_1; o4[2] = a4_2; o4[3] = a4_3; o4[4] = a4_4; o4[5] = a4_5
                o4[6] = a4_6; o4[7] = a4_7

    # fmt: on

    @overload(_scores_block)
    def _scores_block_overload(q, k_strips, n_strips, s):
        kernel = _scores_5x16 if q.dtype == types.float32 else _scores_5x8
        return lambda q, k_strips, n_strips, s: kernel(q, k_strips, n_strips, s)

    @overload(_accumulate_block)
    def _accumulate_block_overload(p, n_cols, v_strips, out, rescale):
        kernel = _accumulate_5x16 if p.dtype == types.float32 else _accumulate_5x8
        return lambda p, n_cols, v_strips, out, rescale: kernel(p, n_cols, v_strips, out, rescale)

    @njit(fastmath=SOFTMAX_FLAGS)
    def _softmax_tile(scores, rows, cols, causal, diagonal, first, row_max, row_sum, rescale):
        """Online-softmax step over one score tile, in place: scores become exp2(s - new max).

        Row r sees columns < min(cols, diagonal + r) under the causal mask (all cols otherwise);
        the masked columns are set to 0 and a row that sees none keeps its state (rescale 1).
        rescale[r] is what the row's output accumulated so far must be multiplied by. Not
        inlined on purpose: its `reassoc` flag lets LLVM vectorise the max and the sum.
        """
        zero = scores.dtype.type(0)
        for r in range(rows):
            s_row = scores[r]
            n_valid = min(cols, diagonal + r) if causal else cols
            if n_valid <= 0:
                s_row[:cols] = zero
                rescale[r] = 1
                continue
            visible = s_row[:n_valid]
            m = visible[0]
            for c in range(n_valid):
                m = _maxnum(m, visible[c])
            if not first:
                m = _maxnum(m, row_max[r])
            total = zero
            for c in range(n_valid):
                e = _exp2(visible[c] - m)
                visible[c] = e
                total += e
            s_row[n_valid:cols] = zero
            if first:
                rescale[r] = zero
                row_sum[r] = total
            else:
                alpha = _exp2(row_max[r] - m)
                rescale[r] = alpha
                row_sum[r] = row_sum[r] * alpha + total
            row_max[r] = m

    @njit(fastmath=SOFTMAX_FLAGS)
    def _softmax_full_tile(scores, rows, first, row_max, row_sum, rescale):
        """_softmax_tile for a tile with every one of its BLOCK_KEYS columns visible to every row.

        The column count is the compile-time constant BLOCK_KEYS, so LLVM emits each row's max
        and exp2 + sum as fixed-length vector code with no remainder loops or masking branches.
        """
        zero = scores.dtype.type(0)
        for r in range(rows):
            s_row = scores[r]
            m = s_row[0]
            for c in range(BLOCK_KEYS):
                m = _maxnum(m, s_row[c])
            if not first:
                m = _maxnum(m, row_max[r])
            total = zero
            for c in range(BLOCK_KEYS):
                e = _exp2(s_row[c] - m)
                s_row[c] = e
                total += e
            if first:
                rescale[r] = zero
                row_sum[r] = total
            else:
                alpha = _exp2(row_max[r] - m)
                rescale[r] = alpha
                row_sum[r] = row_sum[r] * alpha + total
            row_max[r] = m

    @njit(parallel=True, fastmath=KERNEL_FLAGS, cache=True)
    def _attention_kernel(q, k_packed, v_packed, out, n_k, causal, n_query_blocks):
        """out[b, i] = sum_j softmax_j(q[b, i] . k[b, j]) v[b, j], fused; see the module docstring.

        q (batch, n_q rounded up to ROWS, d_k), pre-scaled by scale * log2(e);
        k_packed, v_packed as _pack_inputs lays them out; out (batch, q rows, d_v rounded up to the
        strip), overwritten. Each batch entry's rows are split into n_query_blocks blocks whose
        sizes differ by at most ROWS (at most one block per ROWS rows).
        """
        batch, n_rows = q.shape[0], q.shape[1]
        group = batch // k_packed.shape[0]  # query heads per key/value head
        units = n_rows // ROWS  # the rows, ROWS at a time: block boundaries fall between them
        strip_width = k_packed.shape[4]
        block_keys = k_packed.shape[2] * strip_width
        # float32 only: measured +3-5% there; for float64 (16 vectors a row, degree-11 exp2)
        # it measured anywhere from -15% to +6%, so float64 keeps the general path.
        fast_softmax = q.itemsize == 4
        for task in prange(batch * n_query_blocks):
            b = task // n_query_blocks
            # Zigzag order (0, last, 1, last-1, ...): with the causal mask consecutive pairs of
            # tasks cost the same, so the OpenMP layer's static contiguous chunks balance
            # across threads when each holds whole pairs.
            i = task % n_query_blocks
            query_block = i // 2 if i % 2 == 0 else n_query_blocks - 1 - i // 2
            q0 = ROWS * (query_block * units // n_query_blocks)
            rows = ROWS * ((query_block + 1) * units // n_query_blocks) - q0
            keys = min(n_k, q0 + rows) if causal else n_k  # keys seen by the block's last row
            q_rows = q[b, q0 : q0 + rows]
            o_rows = out[b, q0 : q0 + rows]
            o_rows[:, :] = 0
            scores = np.empty((rows, block_keys), q.dtype)
            row_max = np.empty(rows, q.dtype)
            row_sum = np.empty(rows, q.dtype)
            rescale = np.empty(rows, q.dtype)
            for key_block in range((keys + block_keys - 1) // block_keys):
                k0 = key_block * block_keys
                cols = min(block_keys, keys - k0)
                n_strips = (cols + strip_width - 1) // strip_width
                _scores_block(q_rows, k_packed[b // group, key_block], n_strips, scores)
                if fast_softmax and cols == BLOCK_KEYS and (not causal or q0 + 1 - k0 >= cols):
                    # A full float32 tile that no row's mask cuts into: the fixed-length path.
                    _softmax_full_tile(scores, rows, key_block == 0, row_max, row_sum, rescale)
                else:
                    _softmax_tile(
                        scores,
                        rows,
                        cols,
                        causal,
                        q0 + 1 - k0,
                        key_block == 0,
                        row_max,
                        row_sum,
                        rescale,
                    )
                _accumulate_block(scores, cols, v_packed[b // group, key_block], o_rows, rescale)
            for r in range(rows):
                o_rows[r, :] *= 1.0 / row_sum[r]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


if numba is not None:

    @njit(parallel=True, cache=True)
    def _pack_inputs(q, k, v, q_factor, q_packed, k_packed, v_packed):
        """Copy the caller's q, k, v into the kernel's layouts, in parallel (part of every call).

        q_packed[b, i] = q[b, i] * q_factor; k_packed[b, block, strip, :, j] is key
        block * BLOCK_KEYS + strip * width + j (k^T in strips); v_packed[b, block, strip, key]
        the key's values in that strip of columns. The padding (rows past n, columns past d_v)
        is never written here: prepare zeroed it, and it holds no input value.
        """
        batch, n_q, d_k = q.shape
        n_k, d_v = v.shape[1], v.shape[2]
        width = k_packed.shape[4]
        block_keys = k_packed.shape[2] * width
        for row in prange(batch * n_q):
            b, i = row // n_q, row % n_q
            for c in range(d_k):
                q_packed[b, i, c] = q[b, i, c] * q_factor
        n_blocks = k_packed.shape[1]
        for task in prange(k.shape[0] * n_blocks):  # each key/value head once
            b, block = task // n_blocks, task % n_blocks
            k0 = block * block_keys
            for key in range(k0, min(n_k, k0 + block_keys)):
                strip, j = (key - k0) // width, (key - k0) % width
                for c in range(d_k):
                    k_packed[b, block, strip, c, j] = k[b, key, c]
                for c in range(d_v):
                    v_packed[b, block, c // width, key - k0, c % width] = v[b, key, c]


if numba is not None:

    @njit(parallel=True, fastmath=SOFTMAX_FLAGS, cache=True)
    def _decode_kernel(q, k, v, q_factor, splits, part_max, part_sum, part_out, out):
        """Few queries against many keys (decode), straight from the caller's k and v.

        A task is one key/value head and one of its `splits` key ranges (split-K, as
        flash-decoding does): it takes every query row of the query heads that share that head
        (group x n_q rows), so each key and value is read once, and keeps the online-softmax
        state of its range in part_max, part_sum, part_out. A second loop merges the ranges.
        Nothing is packed: at a few rows per key the time is the reading of k and v.
        """
        batch, n_q, d_k = q.shape
        kv_batch, n_k, d_v = v.shape
        group = batch // kv_batch
        rows = group * n_q
        per_split = (n_k + splits - 1) // splits
        tile = DECODE_TILE_KEYS
        for task in prange(kv_batch * splits):
            kv, split = task // splits, task % splits
            k0, k1 = split * per_split, min(n_k, (split + 1) * per_split)
            q_rows = np.empty((rows, d_k), q.dtype)
            for r in range(rows):
                for c in range(d_k):
                    q_rows[r, c] = q[kv * group + r // n_q, r % n_q, c] * q_factor
            row_max = part_max[kv, split]
            row_sum = part_sum[kv, split]
            acc = part_out[kv, split]
            row_max[:] = EMPTY_MAX  # an empty range (more splits than keys) weighs exp2(-huge) = 0
            row_sum[:] = 0
            acc[:, :] = 0
            p = np.empty((rows, tile), q.dtype)
            for t0 in range(k0, k1, tile):
                cols = min(tile, k1 - t0)
                for j in range(cols):
                    key = k[kv, t0 + j]
                    for r in range(rows):
                        total = q.dtype.type(0)
                        for c in range(d_k):
                            total += q_rows[r, c] * key[c]
                        p[r, j] = total
                for r in range(rows):
                    m = p[r, 0]
                    for j in range(cols):
                        m = _maxnum(m, p[r, j])
                    m = _maxnum(m, row_max[r])  # EMPTY_MAX before the first tile
                    total = q.dtype.type(0)
                    for j in range(cols):
                        e = _exp2(p[r, j] - m)
                        p[r, j] = e
                        total += e
                    alpha = _exp2(row_max[r] - m)  # 0 before the first tile (nothing to rescale)
                    row_sum[r] = row_sum[r] * alpha + total
                    row_max[r] = m
                    for c in range(d_v):
                        acc[r, c] *= alpha
                for j in range(cols):
                    value = v[kv, t0 + j]
                    for r in range(rows):
                        weight = p[r, j]
                        for c in range(d_v):
                            acc[r, c] += weight * value[c]
        for row in prange(kv_batch * rows):
            kv, r = row // rows, row % rows
            m = part_max[kv, 0, r]
            for split in range(1, splits):
                m = _maxnum(m, part_max[kv, split, r])
            o = out[kv * group + r // n_q, r % n_q]
            o[:] = 0
            total = q.dtype.type(0)
            for split in range(splits):
                weight = _exp2(part_max[kv, split, r] - m)
                total += part_sum[kv, split, r] * weight
                for c in range(d_v):
                    o[c] += part_out[kv, split, r, c] * weight
            for c in range(d_v):
                o[c] /= total


def packed_shapes(
    batch: int, n_q: int, n_k: int, d_k: int, d_v: int, width: int, kv_batch: int | None = None
) -> tuple:
    """Shapes of the kernel's q (rows padded to ROWS), k (k^T in strips per key block) and v
    (per key block, d_v in strips), zero padded to whole tiles; k and v have kv_batch entries
    (fewer than q's with grouped-query attention)."""
    kv_batch = batch if kv_batch is None else kv_batch
    n_blocks = -(-n_k // BLOCK_KEYS)
    return (
        (batch, _round_up(n_q, ROWS), d_k),
        (kv_batch, n_blocks, BLOCK_KEYS // width, d_k, width),
        (kv_batch, n_blocks, -(-d_v // width), BLOCK_KEYS, width),
    )


def query_blocks(dtype: str, batch: int, n_q: int, threads: int, causal: bool) -> int:
    """Query blocks per batch entry (parallel tasks: batch times this), of equal size.

    Larger blocks read k and v fewer times: 256 rows instead of 64 measured +9-10% at n = 8192
    (float32, 2 threads), +2% at 4096; smaller blocks keep enough tasks to balance the threads
    on short sequences. With the causal mask a block computes its diagonal band in full (about
    rows / n of the work, wasted), so it keeps the smallest. The task count is then rounded up
    to a multiple of the threads, so that no thread gets one block more than another (unless
    there are fewer than ROWS rows per block to go round, where blocks stop at ROWS rows).
    """
    rows = BLOCK_QUERIES[dtype] if causal else MAX_BLOCK_QUERIES
    while rows > BLOCK_QUERIES[dtype] and batch * -(-n_q // rows) < TASKS_PER_THREAD * threads:
        rows //= 2
    blocks = _round_up(-(-n_q // rows), threads // math.gcd(batch, threads))
    return min(blocks, -(-n_q // ROWS))  # a block has at least ROWS rows


def uses_decode(n_q: int, group: int, causal: bool) -> bool:
    """The decode path for a few query rows per key/value head (without the causal mask, under
    which a few queries see a few keys only); the tiled path otherwise."""
    return not causal and group * n_q <= DECODE_MAX_ROWS


def decode_splits(kv_batch: int, n_k: int, threads: int) -> int:
    """Key ranges per key/value head: enough tasks to keep every thread busy, each range long
    enough (DECODE_MIN_SPLIT_KEYS) that its merge costs little."""
    wanted = -(-TASKS_PER_THREAD * threads // kv_batch)
    return max(1, min(wanted, n_k // DECODE_MIN_SPLIT_KEYS))


def prepare(args):
    """Allocate the buffers and the output, and compile for these argument types (or load from
    the disk cache). Reads no value of q, k or v: packing them is part of `run`."""
    batch, n_q, d_k = args.q.shape
    kv_batch, n_k, d_v = args.v.shape
    dtype = args.dtype
    threads = numba.get_num_threads()
    state = {
        "args": args,
        "q_factor": dtype.type(args.scale * math.log2(math.e)),  # exp(s * scale) = exp2(q'.k)
        "n_q": n_q,
        "n_k": n_k,
        "d_v": d_v,
        "causal": bool(args.causal),
    }
    if uses_decode(n_q, args.group, args.causal):
        splits = decode_splits(kv_batch, n_k, threads)
        rows = args.group * n_q
        state.update(
            path="decode",
            splits=splits,
            part_max=np.empty((kv_batch, splits, rows), dtype),
            part_sum=np.empty((kv_batch, splits, rows), dtype),
            part_out=np.empty((kv_batch, splits, rows, d_v), dtype),
            out=np.empty((batch, n_q, d_v), dtype),
        )
    else:
        q_shape, k_shape, v_shape = packed_shapes(
            batch, n_q, n_k, d_k, d_v, STRIP[dtype.name], kv_batch
        )
        state.update(
            path="tiled",
            q=np.zeros(q_shape, dtype),
            k=np.zeros(k_shape, dtype),
            v=np.zeros(v_shape, dtype),
            out=np.empty((batch, q_shape[1], v_shape[2] * v_shape[4]), dtype),
            query_blocks=query_blocks(dtype.name, batch, n_q, threads, bool(args.causal)),
        )
    _compile(state)
    return state


_COMPILED: set[tuple] = set()  # the (path, argument kinds) compiled for in this process


def _compile(state) -> None:
    """Compile the path's functions for the types of this call's arguments, or load them from
    the disk cache, once per kind of argument (numba types an array by dtype, layout, flags)."""
    args = state["args"]
    kind = (state["path"], *((a.dtype.str, a.flags.c_contiguous, a.flags.f_contiguous,
            a.flags.writeable, a.flags.aligned) for a in (args.q, args.k, args.v)))  # fmt: skip
    if kind in _COMPILED:
        return
    with _slp_vectorizer_on():
        if state["path"] == "decode":
            _decode_kernel.compile(_signature(_decode_arguments(state)))
        else:
            _pack_inputs.compile(_signature(_pack_arguments(state)))
            _attention_kernel.compile(_signature(_kernel_arguments(state)))
    _COMPILED.add(kind)


def _signature(arguments: tuple) -> tuple:
    return tuple(numba.typeof(a) for a in arguments)


def _decode_arguments(state) -> tuple:
    args = state["args"]
    return (
        args.q,
        args.k,
        args.v,
        state["q_factor"],
        state["splits"],
        state["part_max"],
        state["part_sum"],
        state["part_out"],
        state["out"],
    )


def _pack_arguments(state) -> tuple:
    args = state["args"]
    return (args.q, args.k, args.v, state["q_factor"], state["q"], state["k"], state["v"])


def _kernel_arguments(state) -> tuple:
    return (
        state["q"],
        state["k"],
        state["v"],
        state["out"],
        state["n_k"],
        state["causal"],
        state["query_blocks"],
    )


def run(state):
    if state["path"] == "decode":
        _decode_kernel(*_decode_arguments(state))
        return
    _pack_inputs(*_pack_arguments(state))
    _attention_kernel(*_kernel_arguments(state))


def fetch(state):
    return state["out"][:, : state["n_q"], : state["d_v"]]
