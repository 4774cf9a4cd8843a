"""Tensor-core instructions for numba-cuda kernels, as inline PTX: numba-cuda has no mma or
wmma API, so these are numba intrinsics that emit llvmlite `InlineAsm`, the way numba-cuda's
own float16 support and cache hints (numba/cuda/cache_hints.py) emit PTX.

- `tf32(x)`: `cvt.rna.tf32.f32`, x rounded to TF32 (to nearest, ties away), kept as a float32
  whose low 13 mantissa bits are zero (sm_80 and later). `tf32_pinned` is the same instruction
  marked as having side effects, so that LLVM does not hoist it out of a loop (see
  mma_kernel.steps: hoisting the split of Q out of the K/V loop costs 2 x d / 2 registers).
- `mma(a0, a1, a2, a3, b0, b1, c0, c1, c2, c3)`: one
  `mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32` over the warp, returning (d0, d1, d2, d3);
  a and b are TF32 values (from `tf32`), passed as their 32-bit patterns. The register layout
  is fragments.py's.

Built on first use (numba imports inside), so that importing this module needs no numba.
"""

from __future__ import annotations

import functools
from types import SimpleNamespace

MMA_PTX = (
    "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
    "{$0, $1, $2, $3}, {$4, $5, $6, $7}, {$8, $9}, {$10, $11, $12, $13};"
)
CVT_PTX = "cvt.rna.tf32.f32 $0, $1;"


@functools.cache
def intrinsics() -> SimpleNamespace:
    from llvmlite import ir
    from numba import types
    from numba.cuda.extending import intrinsic

    f32, i32 = ir.FloatType(), ir.IntType(32)

    def make_tf32(pinned: bool):
        @intrinsic
        def tf32(typingctx, x):
            if x != types.float32:
                return None

            def codegen(context, builder, sig, args):
                fnty = ir.FunctionType(i32, [f32])
                asm = ir.InlineAsm(fnty, CVT_PTX, "=r,f", side_effect=pinned)
                return builder.bitcast(builder.call(asm, args), f32)

            return types.float32(types.float32), codegen

        return tf32

    @intrinsic
    def mma(typingctx, a0, a1, a2, a3, b0, b1, c0, c1, c2, c3):
        if any(x != types.float32 for x in (a0, a1, a2, a3, b0, b1, c0, c1, c2, c3)):
            return None
        sig = types.UniTuple(types.float32, 4)(*([types.float32] * 10))

        def codegen(context, builder, sig, args):
            # side_effect: like CUTLASS's `asm volatile`, so that no pass moves a warp-wide
            # instruction into code that only some lanes run.
            fnty = ir.FunctionType(ir.LiteralStructType([f32] * 4), [i32] * 6 + [f32] * 4)
            constraints = ",".join(["=f"] * 4 + ["r"] * 6 + ["f"] * 4)
            asm = ir.InlineAsm(fnty, MMA_PTX, constraints, side_effect=True)
            operands = [builder.bitcast(x, i32) for x in args[:6]] + list(args[6:])
            result = builder.call(asm, operands)
            values = [builder.extract_value(result, i) for i in range(4)]
            return context.make_tuple(builder, sig.return_type, values)

        return sig, codegen

    return SimpleNamespace(tf32=make_tf32(False), tf32_pinned=make_tf32(True), mma=mma)


@functools.cache
def gpu_ops() -> SimpleNamespace:
    """The primitives mma_kernel.steps is written in, as numba-cuda device functions."""
    import math

    from numba import cuda, float32, uint64

    device = cuda.jit(device=True, inline="always")
    native = intrinsics()

    @device
    def shfl_xor(x, mask):
        return cuda.shfl_xor_sync(0xFFFFFFFF, x, mask)

    @device
    def fmax(a, b):
        return max(a, b)

    @device
    def select(condition, a, b):
        return a if condition else b

    @device
    def exp2(x):
        return math.exp2(x)

    @device
    def load_or_zero(array, b, row, col, valid):
        x = float32(0.0)  # zeros, not stale memory: 0 * NaN would poison the sums
        if valid:
            x = array[b, row, col]
        return x

    @device
    def store_if(array, b, row, col, value, valid):
        if valid:
            array[b, row, col] = value

    return SimpleNamespace(
        jit=device,
        uint64=uint64,
        mma=native.mma,
        tf32=native.tf32,
        tf32_pinned=native.tf32_pinned,
        shfl_xor=shfl_xor,
        fmax=fmax,
        select=select,
        exp2=exp2,
        load_or_zero=load_or_zero,
        store_if=store_if,
    )
