"""Decode's scores: a few query rows against a few keys, each a dot product along d, in vector IR.

Written as plain loops, each (row, key) sum is a vector of partial sums that LLVM reduces on
its own at the end: a log2(lanes) chain of shuffles and adds per sum, and for 4 rows x 4 keys
of float32 on AVX-512 half the loop's time went there. Here the rows x keys vectors are
reduced together, as a transpose: each step pairs two vectors, takes the same half of every
segment of both into one vector and the other halves into another, and adds the two, so that
each step halves the vectors and the lanes each sum is spread over; 4 x 4 float32 sums on
16 lanes take 15 adds and 30 shuffles instead of 64 and 64, and end as one vector, one lane
per (row, key). The intrinsic is specialised per tile (rows, keys); the lanes are the target's
widest vector (the package's vector_bits, which the kernels' `_wide_vectors` lets LLVM use).

The same loop asks for the keys `ahead` rows on, a cache line of each of those rows per step (a
vector is at most a line), and decode's p @ v the values' (`prefetch_columns`), each key's
columns as it reads them: spread through the work, where asking for the rows of keys and values
at once stalled the loop while the memory queued them.
"""

from __future__ import annotations

import functools

try:
    from llvmlite import ir as llvmir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # kernels.py says why numba_parallel is unavailable
    pass


def _lanes(dtype) -> int:
    from impls.numba_parallel import vector_bits  # the package is imported by then

    return vector_bits() // dtype.bitwidth


def _halves(width: int, segments: int, upper: bool, other: int | None = None) -> list[int]:
    """The lanes of the lower (or upper) half of each of a vector's equal segments; with
    `other`, each followed by the same lanes of the second vector of a shuffle (from lane
    `other` on)."""
    size = width // segments
    picked = []
    for segment in range(segments):
        start = segment * size + (size // 2 if upper else 0)
        picked += range(start, start + size // 2)
        if other is not None:
            picked += range(other + start, other + start + size // 2)
    return picked


def _reduce_together(builder, vectors: list) -> list:
    """The sum of each vector's lanes, in the order of `vectors`.

    Every vector in play is made of equal segments, each holding the partial sums of one of
    the inputs; a step halves every segment, pairing two vectors while there are several
    (their low halves into one, high halves into another, added) and folding the last one
    onto half its lanes, until each segment is one lane.
    """
    i32 = llvmir.IntType(32)

    def lanes(picked: list[int]) -> llvmir.Constant:
        return llvmir.Constant(llvmir.VectorType(i32, len(picked)), picked)

    count = 1 << (len(vectors) - 1).bit_length()  # pairs all the way: zeros up to a power of 2
    zeros = llvmir.Constant(vectors[0].type, [0.0] * vectors[0].type.count)
    padded = vectors + [zeros] * (count - len(vectors))
    parts = [(vector, [index]) for index, vector in enumerate(padded)]  # (vector, its inputs)
    while len(parts[0][1]) < parts[0][0].type.count:
        width, segments = parts[0][0].type.count, len(parts[0][1])
        if len(parts) > 1:
            paired = []
            for (a, a_inputs), (b, b_inputs) in zip(parts[::2], parts[1::2], strict=True):
                low = builder.shuffle_vector(a, b, lanes(_halves(width, segments, False, width)))
                high = builder.shuffle_vector(a, b, lanes(_halves(width, segments, True, width)))
                inputs = [i for pair in zip(a_inputs, b_inputs, strict=True) for i in pair]
                paired.append((builder.fadd(low, high, flags=("fast",)), inputs))
            parts = paired
        else:
            ((vector, inputs),) = parts
            spare = llvmir.Constant(vector.type, None)
            low = builder.shuffle_vector(vector, spare, lanes(_halves(width, segments, False)))
            high = builder.shuffle_vector(vector, spare, lanes(_halves(width, segments, True)))
            parts = [(builder.fadd(low, high, flags=("fast",)), inputs)]
    totals = {
        index: builder.extract_element(vector, i32(lane))
        for vector, inputs in parts
        for lane, index in enumerate(inputs)
    }
    return [totals[index] for index in range(len(vectors))]


def _name(vector) -> str:
    """LLVM's name of a float vector type in intrinsics' names: v16f32, v8f64."""
    return f"v{vector.count}f{32 if isinstance(vector.element, llvmir.FloatType) else 64}"


def _multiply_add(builder, a, b, c):
    """a * b + c, vectors, fused where the target has an FMA."""
    function_type = llvmir.FunctionType(a.type, [a.type] * 3)
    name = f"llvm.fmuladd.{_name(a.type)}"
    function = cgutils.get_or_insert_function(builder.module, function_type, name)
    return builder.call(function, [a, b, c])


def _prefetch(builder, pointer):
    """Ask for the cache line at pointer to be brought into L2 (x86 prefetcht1: a hint, which
    never faults, whatever the address; so rows past the last are asked for harmlessly)."""
    i32 = llvmir.IntType(32)
    function_type = llvmir.FunctionType(llvmir.VoidType(), [pointer.type, i32, i32, i32])
    function = cgutils.get_or_insert_function(builder.module, function_type, "llvm.prefetch.p0")
    builder.call(function, [pointer, i32(0), i32(2), i32(1)])  # read, keep in L2, data


def _load_first(builder, pointer, vector, count):
    """The vector at pointer with its lanes from `count` on zero, reading nothing past them
    (LLVM's masked load: the tail of a row whose length is not a whole number of vectors)."""
    i32 = llvmir.IntType(32)
    lanes = vector.count
    splat = builder.insert_element(
        llvmir.Constant(llvmir.VectorType(i32, lanes), None), builder.trunc(count, i32), i32(0)
    )
    splat = builder.shuffle_vector(
        splat, splat, llvmir.Constant(llvmir.VectorType(i32, lanes), [0] * lanes)
    )
    mask = builder.icmp_unsigned(
        "<", llvmir.Constant(llvmir.VectorType(i32, lanes), list(range(lanes))), splat
    )
    name = f"llvm.masked.load.{_name(vector)}.p0"
    function_type = llvmir.FunctionType(vector, [pointer.type, i32, mask.type, vector])
    function = cgutils.get_or_insert_function(builder.module, function_type, name)
    align = i32(4 if isinstance(vector.element, llvmir.FloatType) else 8)
    return builder.call(function, [pointer, align, mask, llvmir.Constant(vector, [0.0] * lanes)])


@functools.cache
def dot_products(rows: int, keys: int):
    """The intrinsic dots(q, r, k, key, s, col, ahead): s[r + i, col + j] = q[r + i] . k[key + j]
    for i < rows, j < keys (q, k, s C-contiguous 2-D arrays of one float type, q and k rows of
    the same length d, any d); with ahead > 0, k's rows key + ahead.. are asked for as it goes."""

    @intrinsic
    def dots(typingctx, q, r, k, key, s, col, ahead):
        arrays = (q, k, s)
        if not all(isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C" for a in arrays):
            return None
        if not (q.dtype == k.dtype == s.dtype and isinstance(q.dtype, types.Float)):
            return None
        lanes = _lanes(q.dtype)

        def codegen(context, builder, signature, args):
            q_view, k_view, s_view = (
                context.make_array(kind)(context, builder, value)
                for kind, value in zip(arrays, args[0:6:2], strict=True)
            )
            r_index, key_index, col_index = args[1:6:2]
            ahead = args[6]
            vector = llvmir.VectorType(context.get_data_type(q.dtype), lanes)
            d = cgutils.unpack_tuple(builder, q_view.shape)[1]
            intp = d.type

            def row(view, index, width):
                return builder.gep(view.data, [builder.mul(index, width)])

            q_rows = [row(q_view, builder.add(r_index, intp(i)), d) for i in range(rows)]
            k_rows = [row(k_view, builder.add(key_index, intp(j)), d) for j in range(keys)]
            sums = [cgutils.alloca_once(builder, vector) for _ in range(rows * keys)]
            for cell in sums:
                builder.store(llvmir.Constant(vector, [0.0] * lanes), cell)

            ahead_of = [
                row(k_view, builder.add(key_index, builder.add(ahead, intp(j))), d)
                for j in range(keys)
            ]
            asking = builder.icmp_signed(">", ahead, intp(0))

            def step(offset, load):  # every (row, key) sum += q row chunk * k row chunk
                with builder.if_then(asking):  # and the same chunk of the rows ahead asked for
                    for pointer in ahead_of:
                        _prefetch(builder, builder.gep(pointer, [offset]))
                qs = [load(builder.gep(pointer, [offset])) for pointer in q_rows]
                ks = [load(builder.gep(pointer, [offset])) for pointer in k_rows]
                for cell, (x, y) in zip(sums, [(x, y) for x in qs for y in ks], strict=True):
                    builder.store(_multiply_add(builder, x, y, builder.load(cell)), cell)

            chunks = builder.udiv(d, intp(lanes))
            align = q.dtype.bitwidth // 8
            vector_pointer = vector.as_pointer()
            with cgutils.for_range(builder, chunks) as loop:
                offset = builder.mul(loop.index, intp(lanes))
                step(
                    offset, lambda p: builder.load(builder.bitcast(p, vector_pointer), align=align)
                )
            whole = builder.mul(chunks, intp(lanes))
            rest = builder.sub(d, whole)
            with builder.if_then(builder.icmp_unsigned("!=", rest, intp(0)), likely=False):
                step(whole, lambda p: _load_first(builder, p, vector, rest))
            totals = _reduce_together(builder, [builder.load(cell) for cell in sums])
            s_width = cgutils.unpack_tuple(builder, s_view.shape)[1]
            for i in range(rows):
                target = builder.gep(
                    row(s_view, builder.add(r_index, intp(i)), s_width), [col_index]
                )
                for j in range(keys):
                    builder.store(totals[i * keys + j], builder.gep(target, [intp(j)]))
            return context.get_dummy_value()

        return types.none(q, r, k, key, s, col, ahead), codegen

    return dots


@functools.cache
def prefetch_columns(count: int):
    """The intrinsic ask(a, row, col): ask for the cache lines of a[row, col:col + count], for
    `a` a C-contiguous 2-D float array (a row past the last is asked for harmlessly)."""

    @intrinsic
    def ask(typingctx, a, row, col):
        if not (isinstance(a, types.Array) and a.ndim == 2 and a.layout == "C"):
            return None
        per_line = 64 // (a.dtype.bitwidth // 8)

        def codegen(context, builder, signature, args):
            view = context.make_array(a)(context, builder, args[0])
            width = cgutils.unpack_tuple(builder, view.shape)[1]
            first = builder.gep(view.data, [builder.add(builder.mul(args[1], width), args[2])])
            for column in range(0, count, per_line):
                _prefetch(builder, builder.gep(first, [width.type(column)]))
            return context.get_dummy_value()

        return types.none(a, row, col), codegen

    return ask
