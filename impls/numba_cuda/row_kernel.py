"""The row-per-thread kernel (TileConfig): each thread owns one query row (or a share of one,
float64) against K and V tiles in shared memory; for every width, float64, and float32 where the
thread-tiled kernel does not apply."""

from __future__ import annotations

import math

import numpy as np

from impls.numba_cuda.compile_with import device_functions, scalar_types
from impls.numba_cuda.plan import Q_PAD, TileConfig


def kernel_function(cfg: TileConfig, simulated: bool = False):
    """The row-per-thread kernel as a plain Python function; tile sizes are closure constants.

    Hot-loop indices are unsigned: numba adds a negative-index wrap-around to every signed
    index, which costs integer instructions and stops NVVM from merging four neighbouring
    shared-memory loads into one 16-byte load (the arrays are 16-byte aligned for it; the
    simulator accepts no alignment). `cuda` is bound as a module global, not a closure
    variable, because the simulator runs a kernel by swapping its fake module into the
    kernel's globals.
    """
    global cuda
    from numba import cuda

    float32, float64, int64, uint64 = scalar_types(
        simulated, "float32", "float64", "int64", "uint64"
    )
    device = device_functions(simulated)

    ftype = float32 if cfg.dtype == "float32" else float64
    GROUPED = cfg.grouped
    WIDTH = cfg.width
    V_WIDTH = cfg.v_width
    ROWS = cfg.rows
    SPLIT = cfg.split
    KEYS_PER_THREAD = cfg.keys_per_thread
    KEYS = cfg.keys
    THREADS = cfg.threads
    Q_STRIDE = WIDTH + Q_PAD
    ALIGN = None if simulated else 16
    U1 = np.uint64(1)
    U2 = np.uint64(2)
    U3 = np.uint64(3)
    U4 = np.uint64(4)

    PREFETCH = cfg.prefetch
    # Elements of the K and V tiles each thread prefetches into registers
    K_PREFETCHED = KEYS * WIDTH // THREADS if PREFETCH else 1
    V_PREFETCHED = KEYS * V_WIDTH // THREADS if PREFETCH else 1

    @device
    def load_tile(k, v, kr, vr, b, k0, c0, tid):
        """Global -> registers: element tid + it * THREADS of the K and V tiles from key k0."""
        n_k = k.shape[1]
        for it in range(K_PREFETCHED):
            idx = tid + it * THREADS
            j = idx // WIDTH
            c = idx % WIDTH
            x = ftype(0.0)
            if k0 + j < n_k and c < k.shape[2]:
                x = k[b, k0 + j, c]
            kr[it] = x
        for it in range(V_PREFETCHED):
            idx = tid + it * THREADS
            j = idx // V_WIDTH
            c = idx % V_WIDTH
            x = ftype(0.0)  # zeros, not stale memory: 0 * NaN would poison the sum
            if k0 + j < n_k and c0 + c < v.shape[2]:
                x = v[b, k0 + j, c0 + c]
            vr[it] = x

    def attention_tile_kernel(q, k, v, out, scale_log2, causal):
        tid = cuda.threadIdx.x
        r = tid % ROWS  # a warp holds consecutive rows of one key group: broadcast K/V reads
        g = tid // ROWS
        n_q = q.shape[1]
        n_k = k.shape[1]
        d_k = q.shape[2]
        d_v = v.shape[2]
        row_tiles = (n_q + ROWS - 1) // ROWS
        b = cuda.blockIdx.x // row_tiles
        # The key/value head of b (grouped-query attention): a variant of its own, kept in
        # shared memory and read where used (after a barrier, so never held in a register:
        # the float64 tiles have none to spare; ptxas spilled 100 bytes when it was)
        kv_head = cuda.shared.array(1, int64)
        if GROUPED:
            if tid == 0:
                kv_head[0] = b // (q.shape[0] // k.shape[0])
            cuda.syncthreads()
        tile = cuda.blockIdx.x % row_tiles
        if causal:  # longest blocks first: blocks start in index order, the short ones fill in
            tile = row_tiles - 1 - tile
        r0 = tile * ROWS
        c0 = cuda.blockIdx.y * V_WIDTH  # this block's chunk of the output features
        row = r0 + r
        ru = uint64(r)
        gu = uint64(g * KEYS_PER_THREAD)
        zero = ftype(0.0)
        neg_inf = ftype(-math.inf)

        qs = cuda.shared.array((ROWS, Q_STRIDE), ftype, ALIGN)
        ks = cuda.shared.array((KEYS, WIDTH), ftype, ALIGN)
        vs = cuda.shared.array((KEYS, V_WIDTH), ftype, ALIGN)
        ms = cuda.shared.array((SPLIT, ROWS), ftype)
        ls = cuda.shared.array((SPLIT, ROWS), ftype)
        s = cuda.local.array(KEYS_PER_THREAD, ftype)
        o = cuda.local.array(V_WIDTH, ftype)
        kr = cuda.local.array(K_PREFETCHED, ftype)
        vr = cuda.local.array(V_PREFETCHED, ftype)

        for c in range(V_WIDTH):
            o[c] = zero
        m = neg_inf
        l_sum = zero
        key_end = min(n_k, r0 + ROWS) if causal else n_k
        n_tiles = (key_end + KEYS - 1) // KEYS
        n_chunks = (d_k + WIDTH - 1) // WIDTH
        # Prefetch (one feature chunk only): tile t + 1 travels from global memory into
        # registers while tile t is computed, so the loads' latency is hidden.
        prefetch = PREFETCH and n_chunks == 1
        if prefetch:
            load_tile(k, v, kr, vr, kv_head[0] if GROUPED else b, 0, c0, tid)
        for t in range(n_tiles):
            k0 = t * KEYS
            for jj in range(KEYS_PER_THREAD):
                s[jj] = zero
            for ch in range(n_chunks):
                kc0 = ch * WIDTH
                cuda.syncthreads()  # everyone is done with the previous tiles
                if n_chunks > 1 or t == 0:
                    for idx in range(tid, ROWS * WIDTH, THREADS):
                        i = idx // WIDTH
                        c = idx % WIDTH
                        x = zero
                        if r0 + i < n_q and kc0 + c < d_k:
                            x = q[b, r0 + i, kc0 + c] * scale_log2
                        qs[i, c] = x
                if prefetch:
                    for it in range(K_PREFETCHED):
                        idx = tid + it * THREADS
                        ks[idx // WIDTH, idx % WIDTH] = kr[it]
                    for it in range(V_PREFETCHED):
                        idx = tid + it * THREADS
                        vs[idx // V_WIDTH, idx % V_WIDTH] = vr[it]
                else:
                    for idx in range(tid, KEYS * WIDTH, THREADS):
                        j = idx // WIDTH
                        c = idx % WIDTH
                        x = zero
                        if k0 + j < n_k and kc0 + c < d_k:
                            x = k[kv_head[0] if GROUPED else b, k0 + j, kc0 + c]
                        ks[j, c] = x
                    if ch == 0:
                        for idx in range(tid, KEYS * V_WIDTH, THREADS):
                            j = idx // V_WIDTH
                            c = idx % V_WIDTH
                            x = zero  # zeros, not stale memory: 0 * NaN would poison the sum
                            if k0 + j < n_k and c0 + c < d_v:
                                x = v[kv_head[0] if GROUPED else b, k0 + j, c0 + c]
                            vs[j, c] = x
                cuda.syncthreads()
                if prefetch and t + 1 < n_tiles:
                    load_tile(k, v, kr, vr, kv_head[0] if GROUPED else b, k0 + KEYS, c0, tid)
                for c4 in range(WIDTH // 4):
                    c = uint64(c4) * U4
                    q0 = qs[ru, c]
                    q1 = qs[ru, c + U1]
                    q2 = qs[ru, c + U2]
                    q3 = qs[ru, c + U3]
                    for jj in range(KEYS_PER_THREAD):
                        j = gu + uint64(jj)
                        acc = s[jj]
                        acc += q0 * ks[j, c]
                        acc += q1 * ks[j, c + U1]
                        acc += q2 * ks[j, c + U2]
                        acc += q3 * ks[j, c + U3]
                        s[jj] = acc

            tile_max = neg_inf
            for jj in range(KEYS_PER_THREAD):
                key = k0 + g * KEYS_PER_THREAD + jj
                if key >= n_k or (causal and key > row):
                    s[jj] = neg_inf
                tile_max = max(tile_max, s[jj])
            if tile_max > neg_inf:  # else all of this thread's keys in the tile are masked
                if tile_max > m:  # rescale only when the running max moves: rare after a few tiles
                    alpha = math.exp2(m - tile_max)
                    l_sum *= alpha
                    for c in range(V_WIDTH):
                        o[c] *= alpha
                    m = tile_max
                for jj in range(KEYS_PER_THREAD):
                    p = math.exp2(s[jj] - m)
                    l_sum += p
                    j = gu + uint64(jj)
                    for c in range(V_WIDTH):
                        o[c] += p * vs[j, c]

        # Merge the row's SPLIT partial results; the Q tile is free now and holds the sum.
        cuda.syncthreads()
        ms[g, r] = m
        ls[g, r] = l_sum
        cuda.syncthreads()
        m_row = neg_inf
        for h in range(SPLIT):
            m_row = max(m_row, ms[h, r])
        l_row = zero
        for h in range(SPLIT):
            l_row += math.exp2(ms[h, r] - m_row) * ls[h, r]
        weight = math.exp2(m - m_row) / l_row
        for h in range(SPLIT):
            if g == h:
                for c in range(V_WIDTH):
                    acc = weight * o[c]
                    if h > 0:
                        acc += qs[r, c]
                    qs[r, c] = acc
            cuda.syncthreads()
        for idx in range(tid, ROWS * V_WIDTH, THREADS):
            i = idx // V_WIDTH
            c = idx % V_WIDTH
            if r0 + i < n_q and c0 + c < d_v:
                out[b, r0 + i, c0 + c] = qs[i, c]

    return attention_tile_kernel
