"""The kernels of numba_cuda as plain Python functions of a tile config (its sizes are closure
constants), and their compilation: once per variant and process, or to PTX for the tests."""

from __future__ import annotations

import importlib.util
import math
import os
from dataclasses import replace

import numpy as np

from impls.numba_cuda.plan import (
    DTYPES,
    GRID_SIDE,
    Q_PAD,
    ROW_CHOICES,
    WIDTHS,
    ThreadTileConfig,
    TileConfig,
    kernel_config,
)


def is_simulated() -> bool:
    """True when numba runs CUDA kernels in its Python simulator (NUMBA_ENABLE_CUDASIM=1)."""
    if importlib.util.find_spec("numba") is None:
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def _kernel_function(cfg, simulated: bool = False):
    """The kernel of a TileConfig or ThreadTileConfig as a plain Python function."""
    if isinstance(cfg, ThreadTileConfig):
        return _thread_tile_kernel_function(cfg, simulated)
    return _row_kernel_function(cfg, simulated)


def _row_kernel_function(cfg: TileConfig, simulated: bool = False):
    """The row-per-thread kernel as a plain Python function; tile sizes are closure constants.

    Hot-loop indices are unsigned: numba adds a negative-index wrap-around to every signed
    index, which costs integer instructions and stops NVVM from merging four neighbouring
    shared-memory loads into one 16-byte load (the arrays are 16-byte aligned for it; the
    simulator accepts no alignment). `cuda` is bound as a module global, not a closure
    variable, because the simulator runs a kernel by swapping its fake module into the
    kernel's globals.
    """
    global cuda
    from numba import cuda, float32, float64, int64, uint64

    ftype = float32 if cfg.dtype == "float32" else float64
    GROUPED = cfg.grouped
    W = cfg.width
    WV = cfg.v_width
    BM = cfg.rows
    G = cfg.split
    KPT = cfg.keys_per_thread
    BN = cfg.keys
    NT = cfg.threads
    WQ = W + Q_PAD
    ALIGN = None if simulated else 16
    U1 = np.uint64(1)
    U2 = np.uint64(2)
    U3 = np.uint64(3)
    U4 = np.uint64(4)

    PF = cfg.prefetch
    KL = BN * W // NT if PF else 1  # elements of the K tile each thread prefetches
    VL = BN * WV // NT if PF else 1

    @cuda.jit(device=True, inline="always")
    def load_tile(k, v, kr, vr, b, k0, c0, tid):
        """Global -> registers: element tid + it * NT of the K and V tiles starting at key k0."""
        n_k = k.shape[1]
        for it in range(KL):
            idx = tid + it * NT
            j = idx // W
            c = idx % W
            x = ftype(0.0)
            if k0 + j < n_k and c < k.shape[2]:
                x = k[b, k0 + j, c]
            kr[it] = x
        for it in range(VL):
            idx = tid + it * NT
            j = idx // WV
            c = idx % WV
            x = ftype(0.0)  # zeros, not stale memory: 0 * NaN would poison the sum
            if k0 + j < n_k and c0 + c < v.shape[2]:
                x = v[b, k0 + j, c0 + c]
            vr[it] = x

    def attention_tile_kernel(q, k, v, out, scale_log2, causal):
        tid = cuda.threadIdx.x
        r = tid % BM  # a warp holds consecutive rows of one key group: broadcast K/V reads
        g = tid // BM
        n_q = q.shape[1]
        n_k = k.shape[1]
        d_k = q.shape[2]
        d_v = v.shape[2]
        row_tiles = (n_q + BM - 1) // BM
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
        r0 = tile * BM
        c0 = cuda.blockIdx.y * WV  # this block's chunk of the output features
        row = r0 + r
        ru = uint64(r)
        gu = uint64(g * KPT)
        zero = ftype(0.0)
        neg_inf = ftype(-math.inf)

        qs = cuda.shared.array((BM, WQ), ftype, ALIGN)
        ks = cuda.shared.array((BN, W), ftype, ALIGN)
        vs = cuda.shared.array((BN, WV), ftype, ALIGN)
        ms = cuda.shared.array((G, BM), ftype)
        ls = cuda.shared.array((G, BM), ftype)
        s = cuda.local.array(KPT, ftype)
        o = cuda.local.array(WV, ftype)
        kr = cuda.local.array(KL, ftype)
        vr = cuda.local.array(VL, ftype)

        for c in range(WV):
            o[c] = zero
        m = neg_inf
        l_sum = zero
        key_end = min(n_k, r0 + BM) if causal else n_k
        n_tiles = (key_end + BN - 1) // BN
        n_chunks = (d_k + W - 1) // W
        # Prefetch (one feature chunk only): tile t + 1 travels from global memory into
        # registers while tile t is computed, so the loads' latency is hidden.
        prefetch = PF and n_chunks == 1
        if prefetch:
            load_tile(k, v, kr, vr, kv_head[0] if GROUPED else b, 0, c0, tid)
        for t in range(n_tiles):
            k0 = t * BN
            for jj in range(KPT):
                s[jj] = zero
            for ch in range(n_chunks):
                kc0 = ch * W
                cuda.syncthreads()  # everyone is done with the previous tiles
                if n_chunks > 1 or t == 0:
                    for idx in range(tid, BM * W, NT):
                        i = idx // W
                        c = idx % W
                        x = zero
                        if r0 + i < n_q and kc0 + c < d_k:
                            x = q[b, r0 + i, kc0 + c] * scale_log2
                        qs[i, c] = x
                if prefetch:
                    for it in range(KL):
                        idx = tid + it * NT
                        ks[idx // W, idx % W] = kr[it]
                    for it in range(VL):
                        idx = tid + it * NT
                        vs[idx // WV, idx % WV] = vr[it]
                else:
                    for idx in range(tid, BN * W, NT):
                        j = idx // W
                        c = idx % W
                        x = zero
                        if k0 + j < n_k and kc0 + c < d_k:
                            x = k[kv_head[0] if GROUPED else b, k0 + j, kc0 + c]
                        ks[j, c] = x
                    if ch == 0:
                        for idx in range(tid, BN * WV, NT):
                            j = idx // WV
                            c = idx % WV
                            x = zero  # zeros, not stale memory: 0 * NaN would poison the sum
                            if k0 + j < n_k and c0 + c < d_v:
                                x = v[kv_head[0] if GROUPED else b, k0 + j, c0 + c]
                            vs[j, c] = x
                cuda.syncthreads()
                if prefetch and t + 1 < n_tiles:
                    load_tile(k, v, kr, vr, kv_head[0] if GROUPED else b, k0 + BN, c0, tid)
                for c4 in range(W // 4):
                    c = uint64(c4) * U4
                    q0 = qs[ru, c]
                    q1 = qs[ru, c + U1]
                    q2 = qs[ru, c + U2]
                    q3 = qs[ru, c + U3]
                    for jj in range(KPT):
                        j = gu + uint64(jj)
                        acc = s[jj]
                        acc += q0 * ks[j, c]
                        acc += q1 * ks[j, c + U1]
                        acc += q2 * ks[j, c + U2]
                        acc += q3 * ks[j, c + U3]
                        s[jj] = acc

            tile_max = neg_inf
            for jj in range(KPT):
                key = k0 + g * KPT + jj
                if key >= n_k or (causal and key > row):
                    s[jj] = neg_inf
                tile_max = max(tile_max, s[jj])
            if tile_max > neg_inf:  # else all of this thread's keys in the tile are masked
                if tile_max > m:  # rescale only when the running max moves: rare after a few tiles
                    alpha = math.exp2(m - tile_max)
                    l_sum *= alpha
                    for c in range(WV):
                        o[c] *= alpha
                    m = tile_max
                for jj in range(KPT):
                    p = math.exp2(s[jj] - m)
                    l_sum += p
                    j = gu + uint64(jj)
                    for c in range(WV):
                        o[c] += p * vs[j, c]

        # Merge the row's G partial results; the Q tile is free now and holds the sum.
        cuda.syncthreads()
        ms[g, r] = m
        ls[g, r] = l_sum
        cuda.syncthreads()
        m_row = neg_inf
        for h in range(G):
            m_row = max(m_row, ms[h, r])
        l_row = zero
        for h in range(G):
            l_row += math.exp2(ms[h, r] - m_row) * ls[h, r]
        weight = math.exp2(m - m_row) / l_row
        for h in range(G):
            if g == h:
                for c in range(WV):
                    acc = weight * o[c]
                    if h > 0:
                        acc += qs[r, c]
                    qs[r, c] = acc
            cuda.syncthreads()
        for idx in range(tid, BM * WV, NT):
            i = idx // WV
            c = idx % WV
            if r0 + i < n_q and c0 + c < d_v:
                out[b, r0 + i, c0 + c] = qs[i, c]

    return attention_tile_kernel


def _thread_tile_kernel_function(cfg: ThreadTileConfig, simulated: bool = False):
    """The thread-tiled kernel as a plain Python function (see ThreadTileConfig).

    Thread (ty, tx) owns rows ty + 16 i of the block and keys tx * TN + j of each K/V tile,
    and, in P V, output columns tx * CPT .. tx * CPT + CPT - 1. Shared tiles hold chunks of 4
    features (one 16-byte load); Q, K and P chunks are XOR-swizzled by row so that the 16
    rows or keys a warp reads at once fall on distinct banks. The next K/V tile travels from
    global memory into registers while this one is computed. Indices are unsigned, as in
    the row-per-thread kernel.
    """
    global cuda
    from numba import cuda, float32, uint64

    GROUPED = cfg.grouped
    TM = cfg.rows_per_thread
    TN = cfg.keys_per_thread
    W = cfg.width
    BM = cfg.rows
    BN = cfg.keys
    NT = cfg.threads
    SIDE = GRID_SIDE
    W4 = W // 4
    CPT = W // SIDE  # output columns per thread
    CHUNKS = BN * W4 // NT  # 4-feature chunks of the K (and V) tile each thread moves
    Q_SIZE, KV_SIZE, P_SIZE, RED_SIZE = BM * W, BN * W, BM * BN, BM * SIDE  # shapes: literals
    PREFETCHED = CHUNKS * 4
    UNROLL = cfg.unroll
    ALIGN = None if simulated else 16
    UW, UBN, UW4, UTN, UCPT = (np.uint64(x) for x in (W, BN, W4, TN, CPT))
    UBM, USIDE, UNT = np.uint64(BM), np.uint64(SIDE), np.uint64(NT)
    U0, U1, U2, U3, U4, U7, U15 = (np.uint64(x) for x in (0, 1, 2, 3, 4, 7, 15))

    def outer_step(columns):
        """acc[i, j] += a[i] . b[j] over 4 terms for j < columns: a = 4 values of row
        ty + 16 i at `offset` in a row-major shared tile of `stride`, b = (columns, 4) in
        registers. Both products are this step: Q K^T (b = keys) and P V (b = columns of V)."""

        @cuda.jit(device=True, inline="always")
        def step(tile, stride, offset, b, acc, ty):
            for i in range(TM):
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

    scores_step = outer_step(TN)
    output_step = outer_step(CPT)

    @cuda.jit(device=True, inline="always")
    def qk_step(qs, ks, s, kf, cu, ty, tx, swz_row, swz_key):
        """Scores += the 4 features at chunk cu of this thread's rows and keys."""
        kc = (cu ^ swz_key) << U2
        for j in range(TN):
            kb = (tx * UTN + uint64(j)) * UW + kc
            for e in range(4):
                kf[j, e] = ks[kb + uint64(e)]
        scores_step(qs, UW, (cu ^ swz_row) << U2, kf, s, ty)

    @cuda.jit(device=True, inline="always")
    def pv_step(ps, vs, o, vf, ju, ty, tx, swz_row):
        """Output += the weights of keys 4 ju .. 4 ju + 3 times their values."""
        for e in range(4):
            vb = (ju * U4 + uint64(e)) * UW + tx * UCPT
            for cc in range(CPT):
                vf[cc, e] = vs[vb + uint64(cc)]
        output_step(ps, UBN, (ju ^ swz_row) << U2, vf, o, ty)

    @cuda.jit(device=True, inline="always")
    def load_kv(k, v, kr, vr, b, k0, tid):
        """Global -> registers: this thread's chunks of the K and V tiles starting at key k0."""
        n_k = uint64(k.shape[1])
        d_k = uint64(k.shape[2])
        d_v = uint64(v.shape[2])
        for it in range(CHUNKS):
            f = tid + uint64(it) * UNT
            key = k0 + f // UW4
            c = (f % UW4) << U2
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
        swz_key = tx & U7  # keys tx * TN + j: K chunk swizzle (key // TN) & 7
        n_q = uint64(q.shape[1])
        n_k = uint64(k.shape[1])
        d_k = uint64(q.shape[2])
        d_v = uint64(v.shape[2])
        row_tiles = (n_q + UBM - U1) // UBM
        n_splits = uint64(splits)
        bid = uint64(cuda.blockIdx.x)
        split = bid % n_splits  # the key splits of one row tile are neighbours in the grid
        b = bid // n_splits // row_tiles
        kv = b // (uint64(q.shape[0]) // uint64(k.shape[0])) if GROUPED else b  # its K, V head
        tile = bid // n_splits % row_tiles
        if causal:  # longest blocks first: blocks start in index order, the short ones fill in
            tile = row_tiles - U1 - tile
        r0 = tile * UBM
        neg_inf = float32(-math.inf)
        zero = float32(0.0)

        qs = cuda.shared.array(Q_SIZE, float32, ALIGN)
        ks = cuda.shared.array(KV_SIZE, float32, ALIGN)
        vs = cuda.shared.array(KV_SIZE, float32, ALIGN)
        ps = cuda.shared.array(P_SIZE, float32, ALIGN)
        red = cuda.shared.array(RED_SIZE, float32, ALIGN)
        s = cuda.local.array((TM, TN), float32)
        o = cuda.local.array((TM, CPT), float32)
        m = cuda.local.array(TM, float32)
        l_sum = cuda.local.array(TM, float32)
        kf = cuda.local.array((TN, 4), float32)
        vf = cuda.local.array((CPT, 4), float32)
        kr = cuda.local.array(PREFETCHED, float32)
        vr = cuda.local.array(PREFETCHED, float32)

        for i in range(TM):
            m[i] = neg_inf
            l_sum[i] = zero
            for cc in range(CPT):
                o[i, cc] = zero
        for it in range(BM * W4 // NT):  # Q, pre-scaled by scale * log2(e), swizzled
            f = tid + uint64(it) * UNT
            rl = f // UW4
            c4 = f % UW4
            base = rl * UW + ((c4 ^ (rl & U7)) << U2)
            for e in range(4):
                col = (c4 << U2) + uint64(e)
                x = zero
                if r0 + rl < n_q and col < d_k:
                    x = q[b, r0 + rl, col] * scale_log2
                qs[base + uint64(e)] = x
        key_end = min(n_k, r0 + UBM) if causal else n_k
        all_tiles = (key_end + UBN - U1) // UBN
        per_split = (all_tiles + n_splits - U1) // n_splits
        t_begin = min(all_tiles, split * per_split)
        t_end = min(all_tiles, t_begin + per_split)
        if t_begin < t_end:  # an empty split (a short causal row tile) loads nothing
            load_kv(k, v, kr, vr, kv, t_begin * UBN, tid)
        for step in range(t_end - t_begin):
            t = t_begin + uint64(step)
            k0 = t * UBN
            cuda.syncthreads()  # everyone is done with the previous K, V and P tiles
            for it in range(CHUNKS):
                f = tid + uint64(it) * UNT
                kl = f // UW4
                c4 = f % UW4
                kbase = kl * UW + ((c4 ^ ((kl // UTN) & U7)) << U2)
                vbase = kl * UW + (c4 << U2)
                for e in range(4):
                    ks[kbase + uint64(e)] = kr[it * 4 + e]
                    vs[vbase + uint64(e)] = vr[it * 4 + e]
            cuda.syncthreads()
            if t + U1 < t_end:
                load_kv(k, v, kr, vr, kv, k0 + UBN, tid)

            for i in range(TM):
                for j in range(TN):
                    s[i, j] = zero
            for c in range(W4 // UNROLL):
                for u in range(UNROLL):
                    cu = uint64(c * UNROLL + u)
                    qk_step(qs, ks, s, kf, cu, ty, tx, swz_row, swz_key)

            for i in range(TM):
                rl = ty + uint64(i * SIDE)
                row = r0 + rl
                part = neg_inf
                for j in range(TN):
                    key = k0 + tx * UTN + uint64(j)
                    if key >= n_k or (causal and key > row):
                        s[i, j] = neg_inf
                    part = max(part, s[i, j])
                red[rl * USIDE + tx] = part
            cuda.syncthreads()  # row maxima posted; every thread is done reading K

            for i in range(TM):
                rl = ty + uint64(i * SIDE)
                tile_max = neg_inf
                for h in range(SIDE):
                    tile_max = max(tile_max, red[rl * USIDE + uint64(h)])
                m_new = max(m[i], tile_max)
                m_safe = m_new if m_new > neg_inf else zero  # rows with every key masked so far
                alpha = math.exp2(m[i] - m_safe)
                m[i] = m_new
                total = l_sum[i] * alpha
                for cc in range(CPT):
                    o[i, cc] *= alpha
                for j in range(TN):
                    p = math.exp2(s[i, j] - m_safe)
                    total += p
                    key = tx * UTN + uint64(j)
                    ps[rl * UBN + (((key >> U2) ^ swz_row) << U2) + (key & U3)] = p
                l_sum[i] = total
            cuda.syncthreads()  # P posted

            for j in range(BN // 4 // UNROLL):
                for u in range(UNROLL):
                    pv_step(ps, vs, o, vf, uint64(j * UNROLL + u), ty, tx, swz_row)

        # Each thread summed the weights of its own keys: the row's sum, through shared memory.
        for i in range(TM):
            red[(ty + uint64(i * SIDE)) * USIDE + tx] = l_sum[i]
        cuda.syncthreads()
        for i in range(TM):
            rl = ty + uint64(i * SIDE)
            total = zero
            for h in range(SIDE):
                total += red[rl * USIDE + uint64(h)]
            if r0 + rl >= n_q:
                continue
            if n_splits == U1:
                inv = float32(1.0) / total
                for cc in range(CPT):
                    col = tx * UCPT + uint64(cc)
                    if col < d_v:
                        out[b, r0 + rl, col] = o[i, cc] * inv
            else:  # unnormalised, with the row's max and sum: merge_splits combines them
                part = b * n_splits + split
                for cc in range(CPT):
                    col = tx * UCPT + uint64(cc)
                    if col < d_v:
                        o_part[part, r0 + rl, col] = o[i, cc]
                if tx == U0:
                    ml_part[part, r0 + rl, 0] = m[i]
                    ml_part[part, r0 + rl, 1] = total

    return attention_thread_tile_kernel


def _merge_splits_function():
    """out = the key splits' partial outputs, each weighted by exp2(its max - the row's max)."""
    global cuda
    from numba import cuda, float32

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


def _signature(cfg):
    from numba import types

    f = getattr(types, cfg.dtype)
    arr = f[:, :, ::1]
    if isinstance(cfg, ThreadTileConfig):
        return types.void(arr, arr, arr, arr, arr, arr, f, types.boolean, types.int64)
    return types.void(arr, arr, arr, arr, f, types.boolean)


def _merge_signature():
    from numba import types

    arr = types.float32[:, :, ::1]
    return types.void(arr, arr, arr, types.int64)


def _jit_options(cfg) -> dict:
    # fastmath (float32 only): exp2 becomes the hardware ex2.approx, ample for a softmax.
    # launch_bounds (threads, min_blocks): two 256-thread blocks per SM cap registers at 128;
    # the row kernel then spills (float32 d = 64: 60 bytes) and promises one block per SM, the
    # thread-tiled kernel fits (120-128 registers, no spills) and promises two.
    return {"fastmath": cfg.dtype == "float32", "launch_bounds": (cfg.threads, cfg.min_blocks)}


def ptx_targets() -> list[tuple[object, object, object, dict]]:
    """Every kernel prepare() may launch: (config, python function, signature, jit options);
    the key splits' merge is the config "merge"."""
    targets = [("merge", _merge_splits_function(), _merge_signature(), {"fastmath": True})]
    for dtype in DTYPES:
        for width in WIDTHS:
            for rows in ROW_CHOICES if dtype == "float32" else (32,):
                for grouped in (False, True):
                    cfg = replace(kernel_config(dtype, width, rows), grouped=grouped)
                    options = _jit_options(cfg)
                    targets.append((cfg, _kernel_function(cfg), _signature(cfg), options))
    return targets


_KERNELS: dict[object, object] = {}


def _kernel(cfg):
    """Compiled once per variant and process (eagerly, with its signature)."""
    if cfg not in _KERNELS:
        from numba import cuda

        if is_simulated():
            _KERNELS[cfg] = cuda.jit(_kernel_function(cfg, simulated=True))
        else:
            _KERNELS[cfg] = cuda.jit(_signature(cfg), **_jit_options(cfg))(_kernel_function(cfg))
    return _KERNELS[cfg]


def _merge_kernel():
    if "merge" not in _KERNELS:
        from numba import cuda

        if is_simulated():
            _KERNELS["merge"] = cuda.jit(_merge_splits_function())
        else:
            _KERNELS["merge"] = cuda.jit(_merge_signature(), fastmath=True)(
                _merge_splits_function()
            )
    return _KERNELS["merge"]
