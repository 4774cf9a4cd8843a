"""The compiled code of numba_parallel's tiled path (the fused kernel, its microkernels, the
packing) and what decode.py's path shares with it (exp2, the intrinsics, the microkernels).

Numba's disk cache checks the timestamp of the file a cached kernel is in, not of the files it
compiles code from: `DIGEST`, of this file, template.py (which writes the microkernels) and
dots.py (decode's dot products), is part of every kernel's signature instead, so the cache
never serves a kernel, here or in decode.py, built from older helpers. The register tile
(rows x columns of each product microkernel) is not a constant either: it reaches the kernel
as the *type* of its `tile` argument (see `tile_argument`), so each tile shape is its own
compiled, cached specialisation, with microkernels written for it by template.py.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import math
from pathlib import Path

import numpy as np

from impls.numba_parallel import dots, template

try:
    import numba
    from llvmlite import ir as llvmir
    from numba import njit, prange, types
    from numba.core import cgutils
    from numba.extending import intrinsic, overload
except ImportError as exc:  # numba is a hard dependency; keep `import impls` working regardless
    numba = None
    NUMBA_IMPORT_ERROR = f"numba cannot be imported: {exc}"
else:
    NUMBA_IMPORT_ERROR = None


# Keys per key block (a multiple of every tile's columns): 128 and 512 measured no faster
# (docs/kernels/numba_parallel.md). Here, not in the package's tuning table, as the kernels
# compile it in as a constant.
BLOCK_KEYS = 256
# Where every buffer that the microkernels read or write as vectors starts: on a cache line, so
# that no 512-bit access straddles two lines. NumPy's allocator aligns to 16 bytes and Numba's
# to 32, at which every zmm load of the packed k and v straddles (measured against those:
# docs/kernels/numba_parallel.md).
ALIGNMENT = 64
DIGEST = hashlib.sha256(
    Path(__file__).read_bytes()
    + b"".join(Path(module.__file__).read_bytes() for module in (template, dots))
).hexdigest()[:12]

# Fast-math flags of the microkernels: everything but `reassoc`, with which LLVM vectorises the
# reduction loop instead of the tile and spills. The softmax step, whose max and sum must
# vectorise, does get it.
KERNEL_FLAGS = {"nnan", "ninf", "nsz", "arcp", "contract", "afn"}
SOFTMAX_FLAGS = KERNEL_FLAGS | {"reassoc"}

# 2^f on [-0.5, 0.5]: Chebyshev fits, relative error 2.6e-9 (float32) and < 1e-15 (float64).
EXP2_F32 = (0.9999999999595485, 0.6931472067106198, 0.24022651213595642, 0.05550327214209506,
            0.009618025602898463, 0.001340043216532545, 0.00015469731995488832)  # fmt: skip
# exp2's rounding: for x in [-127, 0] (float32) or [-1023, 0] (float64), as exp2 clamps it,
# x + SHIFT lies in [2^k, 2^(k+1)) (k = 23 or 52, the mantissa's width), where consecutive
# floats are consecutive integers: the sum is x rounded to an integer, and its lowest mantissa
# bits are round(x) plus the exponent's bias.
SHIFT_F32 = 1.5 * 2.0**23 + 127
SHIFT_F64 = 1.5 * 2.0**52 + 1023
EXP2_F64 = (1.0, 0.6931471805599493, 0.24022650695910847, 0.05550410866462554,
            0.009618129107298649, 0.0013333558185157194, 0.00015403530867208687,
            1.5252700137065192e-05, 1.3215218473446369e-06, 1.0191198409435894e-07,
            7.11241788166262e-09, 2.5769630006023985e-10)  # fmt: skip


@contextlib.contextmanager
def slp_vectorizer_on():
    """Switch on LLVM's SLP vectoriser while compiling (Numba reads the flag per compilation)."""
    previous = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = previous


def aligned_zeros(shape: tuple, dtype) -> np.ndarray:
    """np.zeros(shape, dtype), its first element on an ALIGNMENT boundary."""
    dtype = np.dtype(dtype)
    size = math.prod(shape) * dtype.itemsize
    raw = np.zeros(size + ALIGNMENT, np.uint8)
    first = -raw.ctypes.data % ALIGNMENT
    return raw[first : first + size].view(dtype).reshape(shape)


def exp2(x):
    """2 ** x for x <= 0, vectorisable; implemented per dtype by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


def _scores_block(q, k_strips, n_strips, s, tile):
    """s[:, :n_strips * columns] = q @ k block, a tile at a time; by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


def _accumulate_block(p, n_cols, v_strips, out, rescale, tile):
    """out = rescale[:, None] * out + p[:, :n_cols] @ v block; by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


def tile_argument(**sizes: int) -> np.ndarray:
    """A register tile as an empty array whose Numba type carries its sizes: the dtype has a
    field per size (`rows=8` is a field `rows` of 8 bytes) and one named after `DIGEST`.

    A kernel compiled for one tile shape (or one version of the helpers and the template) so
    never serves another, in memory or from the disk cache, and the overloads read the sizes
    at compile time to pick the microkernels. (An array: a parallel loop takes no tuple.)
    """
    fields = [(name, "i1", (size,)) for name, size in sizes.items()]
    return np.empty(0, np.dtype([*fields, (f"source_{DIGEST}", "i1")]))


def tile_sizes(tile_type) -> dict[str, int]:
    """The sizes a tile argument's Numba type carries (`tile_argument`), at compile time."""
    return {
        name: field[0].shape[0]
        for name, field in tile_type.dtype.fields.items()
        if not name.startswith("source_")
    }


def _tile_rows(tile):
    """The tile's rows, a compile-time constant; by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


@functools.cache
def microkernel(kind: str, rows: int, columns: int):
    """The compiled (lazily, by Numba) microkernel of that kind and tile shape, one per process."""
    namespace = {"_wide_vectors": _wide_vectors}
    if kind == "decode_scores":
        namespace["_dot_products"] = dots.dot_products(rows, columns)
    if kind == "decode_accumulate":
        namespace["_prefetch_columns"] = dots.prefetch_columns(columns)
    source = template.microkernel_source(kind, rows, columns)
    exec(compile(source, f"<{kind} {rows}x{columns}>", "exec"), namespace)
    function = namespace[kind]
    function.__name__ = function.__qualname__ = f"{kind}_{rows}x{columns}"
    # Decode's scores are dot products along d: LLVM vectorises a reduction only when it may
    # reassociate the sum.
    return njit(fastmath=SOFTMAX_FLAGS if kind == "decode_scores" else KERNEL_FLAGS)(function)


if numba is not None:

    @intrinsic
    def _exact_add(typingctx, a, b):
        """a + b, which LLVM may not reassociate: Numba gives every float operation without
        flags its fast-math ones, and with `reassoc` LLVM folds (x + c) - c to x, the rounding
        that exp2's shift is for."""
        if not (isinstance(a, types.Float) and a == b):
            return None

        def codegen(context, builder, signature, args):
            return builder.fadd(args[0], args[1], flags=("nnan", "ninf", "nsz"))

        return a(a, b), codegen

    @intrinsic
    def _exponent_from_low_bits(typingctx, shifted):
        """The float whose exponent field is the lowest bits of shifted's mantissa (2^n, for
        shifted = x + SHIFT_F32 or SHIFT_F64 and n = round(x) >= -127 or -1023): a shift of its
        bits by the mantissa's width."""
        if shifted not in (types.float32, types.float64):
            return None

        def codegen(context, builder, signature, args):
            width = signature.return_type.bitwidth
            integer = llvmir.IntType(width)
            bits = builder.bitcast(args[0], integer)
            exponent = builder.shl(bits, integer(23 if width == 32 else 52))
            return builder.bitcast(exponent, args[0].type)

        return shifted(shifted), codegen

    @intrinsic
    def maxnum(typingctx, a, b):
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

    @intrinsic
    def _wide_vectors(typingctx):
        """Let LLVM use the target's widest vectors in the calling function.

        LLVM's tuning for Intel's AVX-512 server cores prefers 256-bit vectors, so Numba code
        compiles to ymm there although zmm exist; the function attribute that clang's
        -mprefer-vector-width=512 sets lifts that for this function only (the process's other
        code keeps the target's default). On targets without 512-bit vectors it changes nothing.
        """

        def codegen(context, builder, signature, args):
            # llvmlite checks attribute names against a fixed list; a string attribute
            # ("key"="value") is written into the IR as it is.
            set.add(builder.function.attributes, '"prefer-vector-width"="512"')
            return context.get_dummy_value()

        return types.none(), codegen

    def _exp2_f32(x):
        """2^x = 2^n * 2^f, n = round(x), f in [-0.5, 0.5]; 2^f by a degree-6 polynomial.

        Adding SHIFT_F32 rounds x to an integer held in the sum's lowest mantissa bits as
        n + 127, the exponent field of 2^n (three instructions: a floor, then a conversion to
        int took five). x is clamped at -127, where that field is 0, so any x at or below it
        gives exactly 0 (never NaN or inf, whatever the distance to the row maximum).
        """
        x = max(x, np.float32(-127.0))
        shifted = _exact_add(x, np.float32(SHIFT_F32))
        f = x - _exact_add(shifted, np.float32(-SHIFT_F32))
        p = np.float32(EXP2_F32[6])
        p = p * f + np.float32(EXP2_F32[5])
        p = p * f + np.float32(EXP2_F32[4])
        p = p * f + np.float32(EXP2_F32[3])
        p = p * f + np.float32(EXP2_F32[2])
        p = p * f + np.float32(EXP2_F32[1])
        p = p * f + np.float32(EXP2_F32[0])
        return p * _exponent_from_low_bits(shifted)

    def _exp2_f64(x):
        """As _exp2_f32 for float64: degree-11 polynomial, clamped at -1023."""
        x = max(x, -1023.0)
        shifted = _exact_add(x, SHIFT_F64)
        f = x - _exact_add(shifted, -SHIFT_F64)
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
        return p * _exponent_from_low_bits(shifted)

    @overload(exp2, inline="always")
    def _exp2_overload(x):
        if x == types.float32:
            return _exp2_f32
        if x == types.float64:
            return _exp2_f64
        return None

    @njit(inline="always")
    def aligned_empty(rows, columns, like):
        """np.empty((rows, columns), like.dtype) inside a kernel, its first element on an
        ALIGNMENT boundary."""
        raw = np.empty(rows * columns + ALIGNMENT // like.itemsize, like.dtype)
        first = -raw.ctypes.data % ALIGNMENT // like.itemsize
        return raw[first : first + rows * columns].reshape((rows, columns))

    @overload(_tile_rows)
    def _tile_rows_overload(tile):
        rows = tile_sizes(tile)["rows"]
        return lambda tile: rows

    @overload(_scores_block)
    def _scores_block_overload(q, k_strips, n_strips, s, tile):
        kernel = microkernel("scores", **tile_sizes(tile))
        return lambda q, k_strips, n_strips, s, tile: kernel(q, k_strips, n_strips, s)

    @overload(_accumulate_block)
    def _accumulate_block_overload(p, n_cols, v_strips, out, rescale, tile):
        kernel = microkernel("accumulate", **tile_sizes(tile))
        return lambda p, n_cols, v_strips, out, rescale, tile: kernel(
            p, n_cols, v_strips, out, rescale
        )

    @njit(fastmath=SOFTMAX_FLAGS)
    def softmax_tile(scores, rows, cols, causal, diagonal, first, row_max, row_sum, rescale):
        """Online-softmax step over one score tile, in place: scores become exp2(s - new max).

        Row r sees columns < min(cols, diagonal + r) under the causal mask (all cols otherwise);
        the masked columns are set to 0 and a row that sees none keeps its state (rescale 1).
        rescale[r] is what the row's output accumulated so far must be multiplied by. In three
        loops: every row's maximum, then every row's new state at once (its exp2 vectorised
        across rows), then exp2 and the sum row by row, where one loop per row waited on a
        scalar exp2 between the rows' vector loops. Not inlined on purpose: its `reassoc` flag
        lets LLVM vectorise the max and the sum.
        """
        _wide_vectors()
        zero = scores.dtype.type(0)
        for r in range(rows):  # the tile's maximum of each row, kept in rescale for now
            n_valid = min(cols, diagonal + r) if causal else cols
            m = row_max[r] if n_valid <= 0 else scores[r, 0]
            for c in range(n_valid):
                m = maxnum(m, scores[r, c])
            rescale[r] = m
        _new_states(rows, first, row_max, rescale)
        for r in range(rows):
            s_row = scores[r]
            n_valid = max(0, min(cols, diagonal + r) if causal else cols)
            m = row_max[r]
            total = zero
            for c in range(n_valid):
                e = exp2(s_row[c] - m)
                s_row[c] = e
                total += e
            s_row[n_valid:cols] = zero
            row_sum[r] = total if first else row_sum[r] * rescale[r] + total

    @njit(fastmath=SOFTMAX_FLAGS)
    def softmax_full_tile(scores, rows, first, row_max, row_sum, rescale):
        """softmax_tile for a tile with every one of its BLOCK_KEYS columns visible to every row.

        The column count is the compile-time constant BLOCK_KEYS, so LLVM emits each row's max
        and exp2 + sum as fixed-length vector code with no remainder loops or masking branches.
        """
        _wide_vectors()
        zero = scores.dtype.type(0)
        for r in range(rows):
            s_row = scores[r]
            m = s_row[0]
            for c in range(BLOCK_KEYS):
                m = maxnum(m, s_row[c])
            rescale[r] = m
        _new_states(rows, first, row_max, rescale)
        for r in range(rows):
            s_row = scores[r]
            m = row_max[r]
            total = zero
            for c in range(BLOCK_KEYS):
                e = exp2(s_row[c] - m)
                s_row[c] = e
                total += e
            row_sum[r] = total if first else row_sum[r] * rescale[r] + total

    @njit(fastmath=SOFTMAX_FLAGS, inline="always")
    def _new_states(rows, first, row_max, rescale):
        """With each row's tile maximum in rescale: the running maxima, and in rescale what
        each row's output so far is multiplied by (0 on the first tile: nothing yet)."""
        for r in range(rows):
            if first:
                row_max[r] = rescale[r]
                rescale[r] = 0
            else:
                m = maxnum(rescale[r], row_max[r])
                rescale[r] = exp2(row_max[r] - m)
                row_max[r] = m

    @njit(parallel=True, fastmath=KERNEL_FLAGS, cache=True)
    def attention_kernel(q, k_packed, v_packed, out, n_k, causal, n_query_blocks, tile):
        """out[b, i] = sum_j softmax_j(q[b, i] . k[b, j]) v[b, j], fused; see the module docstring.

        q (batch, n_q rounded up to the tile's rows, d_k), pre-scaled by scale * log2(e);
        k_packed, v_packed as pack_inputs lays them out; out (batch, q rows, d_v rounded up to
        the tile's columns), overwritten; tile from tile_argument. Each batch entry's rows are
        split into n_query_blocks blocks whose sizes differ by at most one tile's rows.
        """
        batch, n_rows = q.shape[0], q.shape[1]
        group = batch // k_packed.shape[0]  # query heads per key/value head
        tile_rows = _tile_rows(tile)
        units = n_rows // tile_rows  # block boundaries fall between tiles of rows
        strip_width = k_packed.shape[4]
        block_keys = k_packed.shape[2] * strip_width
        # float32 only: for float64 (16 vectors a row, degree-11 exp2) it measured no faster,
        # so float64 keeps the general path.
        fast_softmax = q.itemsize == 4
        for task in prange(batch * n_query_blocks):
            b = task // n_query_blocks
            # Zigzag order (0, last, 1, last-1, ...): with the causal mask consecutive pairs of
            # tasks cost the same, so the OpenMP layer's static contiguous chunks balance
            # across threads when each holds whole pairs.
            i = task % n_query_blocks
            query_block = i // 2 if i % 2 == 0 else n_query_blocks - 1 - i // 2
            q0 = tile_rows * (query_block * units // n_query_blocks)
            rows = tile_rows * ((query_block + 1) * units // n_query_blocks) - q0
            keys = min(n_k, q0 + rows) if causal else n_k  # keys seen by the block's last row
            q_rows = q[b, q0 : q0 + rows]
            o_rows = out[b, q0 : q0 + rows]
            o_rows[:, :] = 0
            scores = aligned_empty(rows, block_keys, q)
            row_max = np.empty(rows, q.dtype)
            row_sum = np.empty(rows, q.dtype)
            rescale = np.empty(rows, q.dtype)
            for key_block in range((keys + block_keys - 1) // block_keys):
                k0 = key_block * block_keys
                cols = min(block_keys, keys - k0)
                n_strips = (cols + strip_width - 1) // strip_width
                _scores_block(q_rows, k_packed[b // group, key_block], n_strips, scores, tile)
                if fast_softmax and cols == BLOCK_KEYS and (not causal or q0 + 1 - k0 >= cols):
                    # A full float32 tile that no row's mask cuts into: the fixed-length path.
                    softmax_full_tile(scores, rows, key_block == 0, row_max, row_sum, rescale)
                else:
                    softmax_tile(scores, rows, cols, causal, q0 + 1 - k0, key_block == 0,
                                 row_max, row_sum, rescale)  # fmt: skip
                _accumulate_block(
                    scores, cols, v_packed[b // group, key_block], o_rows, rescale, tile
                )
            for r in range(rows):
                o_rows[r, :] *= 1.0 / row_sum[r]


if numba is not None:

    @njit(parallel=True, cache=True)
    def pack_inputs(q, k, v, q_factor, q_packed, k_packed, v_packed):
        """Copy the caller's q, k, v into the kernel's layouts, in parallel (part of every call).

        q_packed[b, i] = q[b, i] * q_factor; k_packed[b, block, strip, :, j] is key
        block * BLOCK_KEYS + strip * width + j (k^T in strips); v_packed[b, block, strip, key]
        the key's values in that strip of columns. The padding (rows past n, columns past d_v)
        is never written here: prepare zeroed it, and it holds no input value. One parallel
        loop (each costs a launch) over strips of `width` rows of q and keys of k and v, so
        that short sequences, a key block or two, still keep every thread busy.
        """
        batch, n_q, d_k = q.shape
        n_k, d_v = v.shape[1], v.shape[2]
        n_blocks, strips, width = k_packed.shape[1], k_packed.shape[2], k_packed.shape[4]
        block_keys = strips * width
        q_strips = (n_q + width - 1) // width
        q_tasks, kv_tasks = batch * q_strips, k.shape[0] * n_blocks * strips
        # Task t packs q's strip t and k's and v's strip t (where they exist): a thread's
        # contiguous share of the tasks holds some of each.
        for task in prange(max(q_tasks, kv_tasks)):
            if task < q_tasks:
                b, first = task // q_strips, task % q_strips * width
                for i in range(first, min(n_q, first + width)):
                    for c in range(d_k):
                        q_packed[b, i, c] = q[b, i, c] * q_factor
            if task < kv_tasks:
                b, block, strip = (
                    task // strips // n_blocks,
                    task // strips % n_blocks,
                    task % strips,
                )
                k0 = block * block_keys
                first, last = k0 + strip * width, min(n_k, k0 + (strip + 1) * width)
                for c in range(d_k):
                    for key in range(first, last):
                        k_packed[b, block, strip, c, key - first] = k[b, key, c]
                for key in range(first, last):
                    for c0 in range(0, d_v, width):
                        for c in range(c0, min(d_v, c0 + width)):
                            v_packed[b, block, c0 // width, key - k0, c - c0] = v[b, key, c]
