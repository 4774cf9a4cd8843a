"""The thread-tiled kernel (ThreadTileConfig): a 16 x 16 grid of threads, each owning a small
block of rows x keys of the score tile, as a GEMM kernel does; float32, widths 32 and 64."""

from __future__ import annotations

import math

import numpy as np

from impls.numba_cuda.compile_with import device_functions, scalar_types
from impls.numba_cuda.plan import GRID_SIDE, ThreadTileConfig


def kernel_function(cfg: ThreadTileConfig, simulated: bool = False):
    """The thread-tiled kernel as a plain Python function (see ThreadTileConfig).

    Thread (ty, tx) owns rows ty + 16 i of the block and keys tx * KEYS_PER_THREAD + j of each
    K/V tile, and, in P V, the COLUMNS_PER_THREAD output columns from tx * COLUMNS_PER_THREAD.
    Shared tiles hold chunks of 4
    features (one 16-byte load); Q, K and P chunks are XOR-swizzled by row so that the 16
    rows or keys a warp reads at once fall on distinct banks. The next K/V tile travels from
    global memory into registers while this one is computed. Indices are unsigned, as in
    the row-per-thread kernel.
    """
    global cuda
    from numba import cuda

    float32, uint64 = scalar_types(simulated, "float32", "uint64")
    device = device_functions(simulated)

    ROWS_PER_THREAD = cfg.rows_per_thread
    KEYS_PER_THREAD = cfg.keys_per_thread
    WIDTH = cfg.width
    ROWS = cfg.rows
    KEYS = cfg.keys
    THREADS = cfg.threads
    SIDE = GRID_SIDE
    CHUNKS_PER_ROW = WIDTH // 4
    COLUMNS_PER_THREAD = WIDTH // SIDE  # output columns per thread
    CHUNKS = KEYS * CHUNKS_PER_ROW // THREADS  # 4-feature chunks of a K or V tile per thread
    # Shared-array shapes must be literals
    Q_SIZE, KV_SIZE, P_SIZE, RED_SIZE = ROWS * WIDTH, KEYS * WIDTH, ROWS * KEYS, ROWS * SIDE
    PREFETCHED = CHUNKS * 4
    UNROLL = cfg.unroll
    ALIGN = None if simulated else 16
    U_WIDTH, U_KEYS, U_CHUNKS_PER_ROW, U_KEYS_PER_THREAD, U_COLUMNS_PER_THREAD = (
        np.uint64(x) for x in (WIDTH, KEYS, CHUNKS_PER_ROW, KEYS_PER_THREAD, COLUMNS_PER_THREAD)
    )
    U_ROWS, U_SIDE, U_THREADS = np.uint64(ROWS), np.uint64(SIDE), np.uint64(THREADS)
    U0, U1, U2, U3, U4, U7, U15 = (np.uint64(x) for x in (0, 1, 2, 3, 4, 7, 15))

    def outer_step(columns):
        """acc[i, j] += a[i] . b[j] over 4 terms for j < columns: a = 4 values of row
        ty + 16 i at `offset` in a row-major shared tile of `stride`, b = (columns, 4) in
        registers. Both products are this step: Q K^T (b = keys) and P V (b = columns of V)."""

        @device
        def step(tile, stride, offset, b, acc, ty):
            for i in range(ROWS_PER_THREAD):
                base = (ty + uint64(i * SIDE)) * stride + offset
                a0 = tile[base]
                a1 = tile[base + U1]
                a2 = tile[base + U2]
                a3 = tile[base + U3]
                for j in range(columns):
                    total = acc[i, j]
                    total += a0 * b[j, 0]
                    total += a1 * b[j, 1]
                    total += a2 * b[j, 2]
                    total += a3 * b[j, 3]
                    acc[i, j] = total

        return step

    scores_step = outer_step(KEYS_PER_THREAD)
    output_step = outer_step(COLUMNS_PER_THREAD)

    @device
    def qk_step(qs, ks, s, kf, cu, ty, tx, swz_row, swz_key):
        """Scores += the 4 features at chunk cu of this thread's rows and keys."""
        kc = (cu ^ swz_key) << U2
        for j in range(KEYS_PER_THREAD):
            kb = (tx * U_KEYS_PER_THREAD + uint64(j)) * U_WIDTH + kc
            for e in range(4):
                kf[j, e] = ks[kb + uint64(e)]
        scores_step(qs, U_WIDTH, (cu ^ swz_row) << U2, kf, s, ty)

    @device
    def pv_step(ps, vs, o, vf, ju, ty, tx, swz_row):
        """Output += the weights of keys 4 ju .. 4 ju + 3 times their values."""
        for e in range(4):
            vb = (ju * U4 + uint64(e)) * U_WIDTH + tx * U_COLUMNS_PER_THREAD
            for cc in range(COLUMNS_PER_THREAD):
                vf[cc, e] = vs[vb + uint64(cc)]
        output_step(ps, U_KEYS, (ju ^ swz_row) << U2, vf, o, ty)

    @device
    def load_kv(k, v, kr, vr, b, k0, tid):
        """Global -> registers: this thread's chunks of the K and V tiles starting at key k0."""
        n_k = uint64(k.shape[1])
        d_k = uint64(k.shape[2])
        d_v = uint64(v.shape[2])
        for it in range(CHUNKS):
            f = tid + uint64(it) * U_THREADS
            key = k0 + f // U_CHUNKS_PER_ROW
            c = (f % U_CHUNKS_PER_ROW) << U2
            for e in range(4):
                col = c + uint64(e)
                x = float32(0.0)
                if key < n_k and col < d_k:
                    x = k[b, key, col]
                kr[it * 4 + e] = x
                y = float32(0.0)  # zeros, not stale memory: 0 * NaN would poison the sum
                if key < n_k and col < d_v:
                    y = v[b, key, col]
                vr[it * 4 + e] = y

    def attention_thread_tile_kernel(q, k, v, out, o_part, ml_part, scale_log2, causal, splits):
        tid = uint64(cuda.threadIdx.x)
        ty = tid >> U4
        tx = tid & U15
        swz_row = ty & U7  # rows ty + 16 i all have this low part: Q and P chunk swizzle
        swz_key = tx & U7  # keys tx * KEYS_PER_THREAD + j: K chunk swizzle, key's tx & 7
        n_q = uint64(q.shape[1])
        n_k = uint64(k.shape[1])
        d_k = uint64(q.shape[2])
        d_v = uint64(v.shape[2])
        row_tiles = (n_q + U_ROWS - U1) // U_ROWS
        n_splits = uint64(splits)
        bid = uint64(cuda.blockIdx.x)
        split = bid % n_splits  # the key splits of one row tile are neighbours in the grid
        b = bid // n_splits // row_tiles
        kv = b // (uint64(q.shape[0]) // uint64(k.shape[0]))  # its K, V head (grouped query)
        tile = bid // n_splits % row_tiles
        if causal:  # longest blocks first: blocks start in index order, the short ones fill in
            tile = row_tiles - U1 - tile
        r0 = tile * U_ROWS
        neg_inf = float32(-math.inf)
        zero = float32(0.0)

        qs = cuda.shared.array(Q_SIZE, float32, ALIGN)
        ks = cuda.shared.array(KV_SIZE, float32, ALIGN)
        vs = cuda.shared.array(KV_SIZE, float32, ALIGN)
        ps = cuda.shared.array(P_SIZE, float32, ALIGN)
        red = cuda.shared.array(RED_SIZE, float32, ALIGN)
        s = cuda.local.array((ROWS_PER_THREAD, KEYS_PER_THREAD), float32)
        o = cuda.local.array((ROWS_PER_THREAD, COLUMNS_PER_THREAD), float32)
        m = cuda.local.array(ROWS_PER_THREAD, float32)
        l_sum = cuda.local.array(ROWS_PER_THREAD, float32)
        kf = cuda.local.array((KEYS_PER_THREAD, 4), float32)
        vf = cuda.local.array((COLUMNS_PER_THREAD, 4), float32)
        kr = cuda.local.array(PREFETCHED, float32)
        vr = cuda.local.array(PREFETCHED, float32)

        for i in range(ROWS_PER_THREAD):
            m[i] = neg_inf
            l_sum[i] = zero
            for cc in range(COLUMNS_PER_THREAD):
                o[i, cc] = zero
        # Q, pre-scaled by scale * log2(e), swizzled
        for it in range(ROWS * CHUNKS_PER_ROW // THREADS):
            f = tid + uint64(it) * U_THREADS
            rl = f // U_CHUNKS_PER_ROW
            c4 = f % U_CHUNKS_PER_ROW
            base = rl * U_WIDTH + ((c4 ^ (rl & U7)) << U2)
            for e in range(4):
                col = (c4 << U2) + uint64(e)
                x = zero
                if r0 + rl < n_q and col < d_k:
                    x = q[b, r0 + rl, col] * scale_log2
                qs[base + uint64(e)] = x
        key_end = min(n_k, r0 + U_ROWS) if causal else n_k
        all_tiles = (key_end + U_KEYS - U1) // U_KEYS
        per_split = (all_tiles + n_splits - U1) // n_splits
        t_begin = min(all_tiles, split * per_split)
        t_end = min(all_tiles, t_begin + per_split)
        if t_begin < t_end:  # an empty split (a short causal row tile) loads nothing
            load_kv(k, v, kr, vr, kv, t_begin * U_KEYS, tid)
        for step in range(t_end - t_begin):
            t = t_begin + uint64(step)
            k0 = t * U_KEYS
            cuda.syncthreads()  # everyone is done with the previous K, V and P tiles
            for it in range(CHUNKS):
                f = tid + uint64(it) * U_THREADS
                kl = f // U_CHUNKS_PER_ROW
                c4 = f % U_CHUNKS_PER_ROW
                kbase = kl * U_WIDTH + ((c4 ^ ((kl // U_KEYS_PER_THREAD) & U7)) << U2)
                vbase = kl * U_WIDTH + (c4 << U2)
                for e in range(4):
                    ks[kbase + uint64(e)] = kr[it * 4 + e]
                    vs[vbase + uint64(e)] = vr[it * 4 + e]
            cuda.syncthreads()
            if t + U1 < t_end:
                load_kv(k, v, kr, vr, kv, k0 + U_KEYS, tid)

            for i in range(ROWS_PER_THREAD):
                for j in range(KEYS_PER_THREAD):
                    s[i, j] = zero
            for c in range(CHUNKS_PER_ROW // UNROLL):
                for u in range(UNROLL):
                    cu = uint64(c * UNROLL + u)
                    qk_step(qs, ks, s, kf, cu, ty, tx, swz_row, swz_key)

            for i in range(ROWS_PER_THREAD):
                rl = ty + uint64(i * SIDE)
                row = r0 + rl
                part = neg_inf
                for j in range(KEYS_PER_THREAD):
                    key = k0 + tx * U_KEYS_PER_THREAD + uint64(j)
                    if key >= n_k or (causal and key > row):
                        s[i, j] = neg_inf
                    part = max(part, s[i, j])
                red[rl * U_SIDE + tx] = part
            cuda.syncthreads()  # row maxima posted; every thread is done reading K

            for i in range(ROWS_PER_THREAD):
                rl = ty + uint64(i * SIDE)
                tile_max = neg_inf
                for h in range(SIDE):
                    tile_max = max(tile_max, red[rl * U_SIDE + uint64(h)])
                m_new = max(m[i], tile_max)
                m_safe = m_new if m_new > neg_inf else zero  # rows with every key masked so far
                alpha = math.exp2(m[i] - m_safe)
                m[i] = m_new
                total = l_sum[i] * alpha
                for cc in range(COLUMNS_PER_THREAD):
                    o[i, cc] *= alpha
                for j in range(KEYS_PER_THREAD):
                    p = math.exp2(s[i, j] - m_safe)
                    total += p
                    key = tx * U_KEYS_PER_THREAD + uint64(j)
                    ps[rl * U_KEYS + (((key >> U2) ^ swz_row) << U2) + (key & U3)] = p
                l_sum[i] = total
            cuda.syncthreads()  # P posted

            for j in range(KEYS // 4 // UNROLL):
                for u in range(UNROLL):
                    pv_step(ps, vs, o, vf, uint64(j * UNROLL + u), ty, tx, swz_row)

        # Each thread summed the weights of its own keys: the row's sum, through shared memory.
        for i in range(ROWS_PER_THREAD):
            red[(ty + uint64(i * SIDE)) * U_SIDE + tx] = l_sum[i]
        cuda.syncthreads()
        for i in range(ROWS_PER_THREAD):
            rl = ty + uint64(i * SIDE)
            total = zero
            for h in range(SIDE):
                total += red[rl * U_SIDE + uint64(h)]
            if r0 + rl >= n_q:
                continue
            if n_splits == U1:
                inv = float32(1.0) / total
                for cc in range(COLUMNS_PER_THREAD):
                    col = tx * U_COLUMNS_PER_THREAD + uint64(cc)
                    if col < d_v:
                        out[b, r0 + rl, col] = o[i, cc] * inv
            else:  # unnormalised, with the row's max and sum: merge_splits combines them
                part = b * n_splits + split
                for cc in range(COLUMNS_PER_THREAD):
                    col = tx * U_COLUMNS_PER_THREAD + uint64(cc)
                    if col < d_v:
                        o_part[part, r0 + rl, col] = o[i, cc]
                if tx == U0:
                    ml_part[part, r0 + rl, 0] = m[i]
                    ml_part[part, r0 + rl, 1] = total

    return attention_thread_tile_kernel
