"""The tensor-core kernel (MmaConfig): FlashAttention-2's layout on mma.sync m16n8k8 TF32.

A block is 4 warps; each warp owns 16 query rows of the block's 64, keeps its Q fragments in
registers (pre-scaled by scale * log2(e)), and for every K/V tile staged in shared memory
computes its 16 x keys scores with mma (S = Q K^T), updates its rows' running maximum and sum
(online softmax), and adds P V into its 16 x width output fragments, also with mma. No score
ever leaves the registers.

- 3xTF32: each float32 operand x is hi + lo, hi = tf32(x), lo = tf32(x - hi), and a product
  is lo*hi' + hi*lo' + hi*hi' (small terms first, into the float32 accumulator): float32
  accuracy at three tensor-core products' cost. `passes` = 1 keeps hi*hi' only (plain TF32).
- A lane's score fragment holds rows g and g + 8 (g = lane // 4) and keys 2t, 2t + 1 of each 8
  (t = lane % 4): a row's maximum and sum are over the 4 lanes of a quad, which agree through
  two xor shuffles (the maximum every tile; the sum, kept per lane, once at the end).
- P V takes the score fragment (C layout) as its A operand without moving a value: A's column
  t then holds key 2t and column t + 4 key 2t + 1, a permutation of the reduction index, and V's
  B fragment is read from shared memory with the same permutation (fragments.pv_key). Shuffles
  (4-8 per 8 keys) or a round trip through shared memory would convert P to A's layout instead.
- Shared K and V rows are padded to width + 4 floats: the 32 lanes' B loads (8 keys by 4
  features, or 4 keys by 8 columns) then fall on 32 distinct banks.

The per-warp steps are written once, in `steps(cfg, ops)`, over primitives `ops` (mma, tf32,
shuffles, guarded loads): ptx.gpu_ops() compiles them into the kernel with numba-cuda, and
fragment_model.numpy_ops() runs the same code in NumPy over arrays of 32 lanes, which is how
the CPU tests check this kernel's algorithm (the simulator runs neither inline PTX nor warp
shuffles). Causal masking, key splits and grouped-query heads are as in the thread-tiled
kernel: longest row tiles first, splits merged by merge.py, K/V rows of b // group.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from impls.numba_cuda import fragments
from impls.numba_cuda.plan import WARP_ROWS, MmaConfig


def steps(cfg: MmaConfig, ops) -> SimpleNamespace:
    """The kernel's steps, each a function of one warp (or, for the loads, one thread) built
    from `ops`; sizes are closure constants. In the model every lane argument is an array of
    the 32 lanes (or the block's 128 threads) and every local array a fragment_model.Lanes."""
    jit, uint64 = ops.jit, ops.uint64
    mma, tf32, shfl_xor = ops.mma, ops.tf32, ops.shfl_xor
    # Q's TF32 halves are the same for every K/V tile, and LLVM hoists their computation out of
    # the tile loop, keeping both halves of all of Q live: 64 registers more at d = 64 (still
    # no spills, one split per block), 128 at d = 128, where ptxas then spilled 200 bytes. There
    # Q is split again in each tile, with a cvt LLVM may not move.
    split_q = ops.tf32_pinned if cfg.width > 64 else ops.tf32
    fmax, select, exp2 = ops.fmax, ops.select, ops.exp2
    load_or_zero, store_if = ops.load_or_zero, ops.store_if
    a_row, a_col, b_row, b_col, c_row, c_col, pv_key = (
        jit(f)
        for f in (
            fragments.a_row,
            fragments.a_col,
            fragments.b_row,
            fragments.b_col,
            fragments.c_row,
            fragments.c_col,
            fragments.pv_key,
        )
    )
    THREE = cfg.passes == 3
    K_STEPS = cfg.width // 8  # 8-feature steps of Q K^T; also 8-column tiles of the output
    KEY_TILES = cfg.keys // 8  # 8-key tiles of the scores; also 8-key steps of P V
    LOADS = cfg.keys * cfg.width // cfg.threads  # K (and V) values each thread stages per tile
    PA0, PA1, PA2, PA3 = fragments.P_FROM_C
    U_WIDTH, U_STRIDE, U_KEYS, U_ROWS = (
        np.uint64(x) for x in (cfg.width, cfg.stride, cfg.keys, cfg.rows)
    )
    U0, U1, U3, U_LAST_ROW = (np.uint64(x) for x in (0, 1, 3, WARP_ROWS - 1))
    U_KEY_STEP = np.uint64(cfg.threads // cfg.width)  # keys a block's threads load at once
    R0, R1 = np.uint64(0), np.uint64(1)  # B fragment registers
    NEG_INF, ZERO, ONE = np.float32(-np.inf), np.float32(0.0), np.float32(1.0)

    @jit
    def product(h0, h1, h2, h3, l0, l1, l2, l3, b0, b1, c0, c1, c2, c3):
        """c + A B, A given as its TF32 halves (h, l), b as float32: 3xTF32 or plain TF32."""
        bh0 = tf32(b0)
        bh1 = tf32(b1)
        if THREE:
            bl0 = tf32(b0 - bh0)
            bl1 = tf32(b1 - bh1)
            c0, c1, c2, c3 = mma(l0, l1, l2, l3, bh0, bh1, c0, c1, c2, c3)
            c0, c1, c2, c3 = mma(h0, h1, h2, h3, bl0, bl1, c0, c1, c2, c3)
        return mma(h0, h1, h2, h3, bh0, bh1, c0, c1, c2, c3)

    @jit
    def block_origin(bid, n_splits, row_tiles, causal, group):
        """(key split, batch entry, its K/V entry, first row) of block `bid`; the splits of a
        row tile are neighbours, causal row tiles start with the longest."""
        split = bid % n_splits
        b = bid // n_splits // row_tiles
        tile = bid // n_splits % row_tiles
        if causal:
            tile = row_tiles - U1 - tile
        kv = b // group
        return split, b, kv, tile * U_ROWS

    @jit
    def key_range(n_k, r0, causal, split, n_splits):
        """(end of the visible keys, first tile, end tile) of this block's split: causal
        blocks stop at their last row's key, so fully masked tiles are never loaded."""
        key_end = min(n_k, r0 + U_ROWS) if causal else n_k
        all_tiles = (key_end + U_KEYS - U1) // U_KEYS
        per_split = (all_tiles + n_splits - U1) // n_splits
        t_begin = min(all_tiles, split * per_split)
        return key_end, t_begin, min(all_tiles, t_begin + per_split)

    @jit
    def start(qf, o, m, l_sum, q, b, row0, lane, scale_log2):
        """Q's A fragments of the warp's 16 rows, scaled; empty output, max and sum."""
        n_q = uint64(q.shape[1])
        d_k = uint64(q.shape[2])
        for kk in range(K_STEPS):
            for r in range(4):
                row = row0 + a_row(lane, uint64(r))
                col = uint64(kk * 8) + a_col(lane, uint64(r))
                x = load_or_zero(q, b, row, col, (row < n_q) & (col < d_k))
                qf[kk, r] = x * scale_log2
                o[kk, r] = ZERO
        for h in range(2):
            m[h] = NEG_INF
            l_sum[h] = ZERO

    @jit
    def load_kv(ks, vs, k, v, kv, k0, key_end, tid):
        """One K/V tile from global into shared memory by the block's threads, coalesced (a
        thread keeps its column, its keys step by threads / width); zeros past the visible keys
        and the feature widths. K, then V: fewer loads in flight, fewer registers."""
        col = tid % U_WIDTH
        first = tid // U_WIDTH
        d_k = uint64(k.shape[2])
        for it in range(LOADS):
            key = first + uint64(it) * U_KEY_STEP
            ks[key * U_STRIDE + col] = load_or_zero(
                k, kv, k0 + key, col, (k0 + key < key_end) & (col < d_k)
            )
        d_v = uint64(v.shape[2])
        for it in range(LOADS):
            key = first + uint64(it) * U_KEY_STEP
            vs[key * U_STRIDE + col] = load_or_zero(
                v, kv, k0 + key, col, (k0 + key < key_end) & (col < d_v)
            )

    @jit
    def scores(s, qf, ks, lane):
        """S = Q K^T for the warp's 16 rows and the tile's keys, in C fragments."""
        for j in range(KEY_TILES):
            for r in range(4):
                s[j, r] = ZERO
        for kk in range(K_STEPS):
            x0, x1, x2, x3 = qf[kk, 0], qf[kk, 1], qf[kk, 2], qf[kk, 3]
            h0, h1, h2, h3 = split_q(x0), split_q(x1), split_q(x2), split_q(x3)
            l0, l1, l2, l3 = split_q(x0 - h0), split_q(x1 - h1), split_q(x2 - h2), split_q(x3 - h3)
            feature = uint64(kk * 8)
            for j in range(KEY_TILES):
                key = uint64(j * 8)
                b0 = ks[(key + b_col(lane, R0)) * U_STRIDE + feature + b_row(lane, R0)]
                b1 = ks[(key + b_col(lane, R1)) * U_STRIDE + feature + b_row(lane, R1)]
                d0, d1, d2, d3 = product(
                    h0, h1, h2, h3, l0, l1, l2, l3, b0, b1, s[j, 0], s[j, 1], s[j, 2], s[j, 3]
                )
                s[j, 0] = d0
                s[j, 1] = d1
                s[j, 2] = d2
                s[j, 3] = d3

    @jit
    def softmax_row(s, m, l_sum, lane, k0, row0, n_k, causal, h):
        """Row g (h = 0: C registers 0, 1) or g + 8 (h = 1: 2, 3) of the lane: masks its
        scores, moves its running maximum to the tile's (agreed over the quad), turns the scores
        into weights exp2(s - max) and returns the factor that rescales the earlier output.
        Called with a constant h: every local-array index is then a constant, which keeps the
        fragments in registers (a loop over h, left rolled, put them in local memory)."""
        row = row0 + c_row(lane, uint64(2 * h))
        top = NEG_INF
        for j in range(KEY_TILES):
            for e in range(2):
                key = k0 + uint64(j * 8) + c_col(lane, uint64(2 * h + e))
                x = select((key >= n_k) | ((key > row) & causal), NEG_INF, s[j, 2 * h + e])
                s[j, 2 * h + e] = x
                top = fmax(top, x)
        top = fmax(top, shfl_xor(top, 1))
        top = fmax(top, shfl_xor(top, 2))
        m_old = m[h]
        m_new = fmax(m_old, top)
        m_safe = select(m_new > NEG_INF, m_new, ZERO)  # a row with every key masked so far
        alpha = exp2(m_old - m_safe)
        m[h] = m_new
        total = l_sum[h] * alpha
        for j in range(KEY_TILES):
            for e in range(2):
                p = exp2(s[j, 2 * h + e] - m_safe)
                total += p
                s[j, 2 * h + e] = p
        l_sum[h] = total
        return alpha

    @jit
    def softmax(s, o, m, l_sum, lane, k0, row0, n_k, causal):
        """The online softmax of the tile for both of the lane's rows; the output rescaled."""
        alpha0 = softmax_row(s, m, l_sum, lane, k0, row0, n_k, causal, 0)
        alpha1 = softmax_row(s, m, l_sum, lane, k0, row0, n_k, causal, 1)
        for j in range(K_STEPS):
            o[j, 0] = o[j, 0] * alpha0
            o[j, 1] = o[j, 1] * alpha0
            o[j, 2] = o[j, 2] * alpha1
            o[j, 3] = o[j, 3] * alpha1

    @jit
    def weighted_values(o, s, vs, lane):
        """O += P V: the weights' C fragments are P's A fragments (P_FROM_C), V read with the
        matching key permutation."""
        for kk in range(KEY_TILES):
            x0, x1, x2, x3 = s[kk, PA0], s[kk, PA1], s[kk, PA2], s[kk, PA3]
            h0, h1, h2, h3 = tf32(x0), tf32(x1), tf32(x2), tf32(x3)
            l0, l1, l2, l3 = tf32(x0 - h0), tf32(x1 - h1), tf32(x2 - h2), tf32(x3 - h3)
            key0 = uint64(kk * 8) * U_STRIDE
            key1 = key0 + pv_key(b_row(lane, R1)) * U_STRIDE
            key0 += pv_key(b_row(lane, R0)) * U_STRIDE
            for j in range(K_STEPS):
                col = uint64(j * 8) + b_col(lane, R0)
                d0, d1, d2, d3 = product(
                    h0, h1, h2, h3, l0, l1, l2, l3, vs[key0 + col], vs[key1 + col],
                    o[j, 0], o[j, 1], o[j, 2], o[j, 3],
                )  # fmt: skip
                o[j, 0] = d0
                o[j, 1] = d1
                o[j, 2] = d2
                o[j, 3] = d3

    @jit
    def warp_tile(s, o, m, l_sum, qf, ks, vs, lane, k0, row0, n_q, n_k, causal):
        """One K/V tile for one warp; a warp whose rows are past n_q or all before the tile's
        first key (causal) skips it (warp-uniform: the shuffles stay whole-warp)."""
        if row0 >= n_q or (causal and k0 > row0 + U_LAST_ROW):
            return
        scores(s, qf, ks, lane)
        softmax(s, o, m, l_sum, lane, k0, row0, n_k, causal)
        weighted_values(o, s, vs, lane)

    @jit
    def finish_row(o, m, l_sum, out, o_part, ml_part, b, part, row0, lane, partial, h):
        """Row g (h = 0) or g + 8 (h = 1): its sum over the quad, then the normalised output,
        or (key splits) the unnormalised output with the row's max and sum for merge.py."""
        n_q = uint64(out.shape[1])
        d_v = uint64(out.shape[2])
        total = l_sum[h] + shfl_xor(l_sum[h], 1)
        total = total + shfl_xor(total, 2)
        row = row0 + c_row(lane, uint64(2 * h))
        inv = ONE / select(total > ZERO, total, ONE)  # a row past n_q has no keys
        for j in range(K_STEPS):
            for e in range(2):
                col = uint64(j * 8) + c_col(lane, uint64(2 * h + e))
                valid = (row < n_q) & (col < d_v)
                if partial:
                    store_if(o_part, part, row, col, o[j, 2 * h + e], valid)
                else:
                    store_if(out, b, row, col, o[j, 2 * h + e] * inv, valid)
        if partial:
            first = (row < n_q) & ((lane & U3) == U0)
            store_if(ml_part, part, row, U0, m[h], first)
            store_if(ml_part, part, row, U1, total, first)

    @jit
    def finish(o, m, l_sum, out, o_part, ml_part, b, part, row0, lane, partial):
        """Both of the lane's rows, each with constant indices (see softmax_row)."""
        finish_row(o, m, l_sum, out, o_part, ml_part, b, part, row0, lane, partial, 0)
        finish_row(o, m, l_sum, out, o_part, ml_part, b, part, row0, lane, partial, 1)

    return SimpleNamespace(
        product=product,
        block_origin=block_origin,
        key_range=key_range,
        start=start,
        load_kv=load_kv,
        scores=scores,
        softmax=softmax,
        weighted_values=weighted_values,
        warp_tile=warp_tile,
        finish=finish,
    )


def kernel_function(cfg: MmaConfig):
    """The tensor-core kernel as a plain Python function for cuda.jit (see the module's doc);
    the signature is the thread-tiled kernel's, key splits included."""
    global cuda
    from numba import cuda, float32, uint64

    from impls.numba_cuda.ptx import gpu_ops

    st = steps(cfg, gpu_ops())
    block_origin, key_range, start = st.block_origin, st.key_range, st.start
    load_kv, warp_tile, finish = st.load_kv, st.warp_tile, st.finish
    K_STEPS, KEY_TILES = cfg.width // 8, cfg.keys // 8
    KV_SIZE = cfg.keys * cfg.stride
    U1, U5, U31, U_ROWS, U_KEYS, U_WARP_ROWS = (
        np.uint64(x) for x in (1, 5, 31, cfg.rows, cfg.keys, WARP_ROWS)
    )

    def attention_mma_kernel(q, k, v, out, o_part, ml_part, scale_log2, causal, splits):
        tid = uint64(cuda.threadIdx.x)
        lane = tid & U31
        n_q = uint64(q.shape[1])
        n_k = uint64(k.shape[1])
        n_splits = uint64(splits)
        row_tiles = (n_q + U_ROWS - U1) // U_ROWS
        group = uint64(q.shape[0]) // uint64(k.shape[0])
        split, b, kv, r0 = block_origin(uint64(cuda.blockIdx.x), n_splits, row_tiles, causal, group)
        row0 = r0 + (tid >> U5) * U_WARP_ROWS
        ks = cuda.shared.array(KV_SIZE, float32, 16)
        vs = cuda.shared.array(KV_SIZE, float32, 16)
        qf = cuda.local.array((K_STEPS, 4), float32)
        o = cuda.local.array((K_STEPS, 4), float32)
        s = cuda.local.array((KEY_TILES, 4), float32)
        m = cuda.local.array(2, float32)
        l_sum = cuda.local.array(2, float32)
        start(qf, o, m, l_sum, q, b, row0, lane, scale_log2)
        key_end, t_begin, t_end = key_range(n_k, r0, causal, split, n_splits)
        for step in range(t_end - t_begin):
            k0 = (t_begin + uint64(step)) * U_KEYS
            cuda.syncthreads()  # every warp is done with the previous tile
            load_kv(ks, vs, k, v, kv, k0, key_end, tid)
            cuda.syncthreads()
            warp_tile(s, o, m, l_sum, qf, ks, vs, lane, k0, row0, n_q, n_k, causal)
        finish(o, m, l_sum, out, o_part, ml_part, b, b * n_splits + split, row0, lane, splits > 1)

    return attention_mma_kernel
