"""Fused attention on the GPU with numba-cuda: K/V tiles in shared memory and an online softmax.

FlashAttention-style, for the FP32 CUDA cores (numba-cuda exposes no tensor-core instructions).
Two kernels, both with no n x n buffer in global memory:

- thread-tiled (float32, 16 < d <= 64; ThreadTileConfig): 16 x 16 threads, each computing a
  rows x keys tile of the scores (4 x 2 at d = 64, 4 x 4 at d = 32; 2 rows in 32-row blocks)
  and a rows x width/16 tile of the output as outer products, the way CUDA-core matrix products
  do: each value a thread loads from shared memory feeds 2-4 FMAs, where the row-per-thread
  kernel used each key value once. The 16 threads of a row agree on its running maximum
  through shared memory. Where one block per 64-row tile would leave the GPU half idle,
  `key_splits` blocks share a row tile's keys and a small kernel merges their partial
  outputs (flash-decoding).
- row per thread group (float64, and float32 at d <= 16 or > 64; TileConfig): `split`
  threads share each query row, each taking its own keys of every tile, merged once at the end.

Causal blocks stop at their last visible key, so fully masked K tiles are never loaded, and
start longest first. The next K/V tile travels into registers while the current one is
computed. Measured on an H200: docs/PERFORMANCE.md.

`numba.cuda` must be NVIDIA's numba-cuda package, not numba's deprecated built-in target: with
numba-cuda installed, numba's import redirector makes `numba.cuda` that package, and it says so
with `numba.cuda.implementation == "NVIDIA"`, which `unavailable_reason` checks. Every numba import
happens inside a function, so importing this module needs neither numba-cuda nor a GPU.
"""

from __future__ import annotations

import importlib.util
import math
import os
import time
from dataclasses import dataclass, replace

import numpy as np

NAME = "numba_cuda"
DESCRIPTION = "numba-cuda kernel: K/V tiles in shared memory, online softmax (FP32/FP64 CUDA cores)"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cuda"

# The simulator runs a Python thread per CUDA thread: test suites shrink sequence lengths to this.
SIMULATOR_MAX_N = 64

WIDTHS = (16, 32, 64, 128)  # feature widths compiled; d > 128 runs in chunks of 128
SPLIT = 8  # float64 threads per query row: more threads in flight when there are few rows
# Bytes per thread of scores (8 float32) and of output row (64 float32, 32 float64): with more,
# ptxas spills out of the 255 registers (float64 uses 240-254 of them at these sizes).
MAX_SCORE_BYTES = 32
MAX_V_BYTES = 256
# The row kernel's constants below were measured at d = 64, which it ran until the
# thread-tiled kernel took over d = 17-64 (float32); it still runs d <= 16, d > 64 and float64.
THREADS = 256  # float32 block size
ROW_CHOICES = (32, 64)  # float32 block heights; block_rows / thread_tile_rows pick one
GRID_FILL = 0.9  # share of the multiprocessors' block slots a 64-row grid must fill
CAUSAL_WAVES = 2  # waves of 64-row blocks a causal grid needs to balance its unequal blocks
# float32 words per thread of output row, scores and prefetched K/V: 84-88 compiled to 242-254
# registers without spills (ptxas, sm_90), 92 and more spilled.
REGISTER_WORDS = 88
STATIC_SHARED_LIMIT = 48 * 1024  # what a kernel may declare statically (cuda.shared.array)
Q_PAD = 4  # keeps the rows of Q 16-byte aligned but off the same shared-memory banks
LOG2E = 1.0 / math.log(2.0)


@dataclass(frozen=True)
class TileConfig:
    """One compiled variant: a block's tile sizes, all of them compile-time constants."""

    dtype: str
    width: int  # features of Q and K per chunk held in shared memory
    v_width: int  # features of V and of the output per block (the grid covers d_v in these)
    rows: int  # query rows per block
    split: int  # threads per row
    keys_per_thread: int  # keys per thread per K/V tile
    min_blocks: int = 1  # blocks per multiprocessor promised to ptxas (caps registers per thread)
    prefetch: bool = False  # next K/V tile into registers during this one (needs spare registers)
    grouped: bool = False  # fewer key/value heads than query heads: K, V rows of b // group

    def __post_init__(self):
        if self.prefetch and (
            self.keys * self.width % self.threads or self.keys * self.v_width % self.threads
        ):
            raise ValueError(f"prefetch needs tiles that split evenly over the threads: {self}")

    @property
    def register_words(self) -> int:
        """Words per thread held in registers: output row, scores and the prefetched tiles."""
        prefetched = self.keys * (self.width + self.v_width) // self.threads if self.prefetch else 0
        return self.v_width + self.keys_per_thread + prefetched

    @property
    def threads(self) -> int:
        return self.rows * self.split

    @property
    def keys(self) -> int:
        """Keys per K/V tile."""
        return self.split * self.keys_per_thread

    @property
    def shared_bytes(self) -> int:
        q_tile = self.rows * (self.width + Q_PAD)
        kv_tiles = self.keys * (self.width + self.v_width)
        merge = 2 * self.split * self.rows  # running max and sum of every thread
        return (q_tile + kv_tiles + merge) * np.dtype(self.dtype).itemsize


def tile_config(dtype: str, width: int, rows: int = 32) -> TileConfig:
    """The tiles for one dtype, feature width and block height (ROW_CHOICES for float32).

    float32 blocks are 256 threads (rows x split) that prefetch the next K/V tile into
    registers (where d fits one width; d > 128 runs in chunks, unprefetched, with the same
    tiles); keys per thread is the largest power of two up to 8 that fits the static shared
    memory and REGISTER_WORDS. float64 keeps 32 rows (16 if 32 do not fit) of SPLIT threads
    and no prefetch: its registers are full without it.
    """
    itemsize = np.dtype(dtype).itemsize
    v_width = min(width, MAX_V_BYTES // itemsize)
    if dtype != "float32" and rows != 32:
        raise ValueError(f"{dtype} tiles have 32 rows (64 are float32 only), not {rows}")
    if dtype == "float32":
        split = THREADS // rows
        for kpt in (8, 4, 2, 1):
            cfg = TileConfig(dtype, width, v_width, rows, split, kpt, prefetch=True)
            if cfg.shared_bytes <= STATIC_SHARED_LIMIT and cfg.register_words <= REGISTER_WORDS:
                return cfg
    else:
        for height in (32, 16):
            fixed = (height * (width + Q_PAD) + 2 * SPLIT * height) * itemsize
            per_key = SPLIT * (width + v_width) * itemsize
            kpt = min(MAX_SCORE_BYTES // itemsize, (STATIC_SHARED_LIMIT - fixed) // per_key)
            if kpt >= 1:
                return TileConfig(dtype, width, v_width, height, SPLIT, int(kpt))
    raise ValueError(f"no tile of width {width} fits {STATIC_SHARED_LIMIT} bytes for {dtype}")


def block_rows(dtype: str, blocks_at_64_rows: int, multiprocessors: int, causal: bool) -> int:
    """The row kernel's block height: 64 rows where that grid still fills 90% of its waves'
    block slots, else 32 (measured with the row kernel at d = 64).

    Taller blocks share each K/V tile among more rows (1.18 ms against 1.57 ms at n = 8192,
    d = 64 on an H200), but halve the blocks: at n = 4096 and one head, 64 blocks would leave
    half of its 132 multiprocessors idle. At d = 64 (242-254 registers per thread) one
    256-thread block runs per multiprocessor; smaller widths were not measured apart.
    Causal blocks differ in length (the kernel starts the longest first), and the longest
    bounds the time unless there are two waves of blocks to balance it: at n = 8192, one wave
    of 64-row blocks took 1.18 ms, as long as without the mask, and 32-row blocks 0.79 ms; at
    n = 16384 64 rows took 2.34 ms and 32 rows 3.07 ms.
    """
    if dtype != "float32":
        return 32
    if causal and blocks_at_64_rows < CAUSAL_WAVES * GRID_FILL * multiprocessors:
        return 32
    waves = -(-blocks_at_64_rows // multiprocessors)
    return 64 if blocks_at_64_rows >= GRID_FILL * waves * multiprocessors else 32


GRID_SIDE = 16  # thread-tiled blocks: 16 x 16 threads, 16 row groups by 16 key (column) groups
THREAD_TILE_WIDTHS = (32, 64)  # float32 widths of the thread-tiled kernel; others: row per thread
# Feature (and key) steps per loop iteration: at d = 64, 2 ran 1-2% ahead at n >= 8192 on an
# H200, at d = 32 1-3% behind.
UNROLL = {32: 1, 64: 2}
# A thread-tiled block uses <= 128 registers (launch bound of 2 blocks) and <= 44 KiB of
# shared memory: two fit on a multiprocessor.
BLOCKS_PER_MULTIPROCESSOR = 2
MAX_SPLITS = 8  # key splits per row tile
MIN_SPLIT_KEYS = 512  # shorter splits spend more on loading Q and merging than they gain
# The merge is a second launch, which costs numba's host side tens of microseconds: splits pay
# only for attention of at least this many FLOPs (0.1 ms at 20 TFLOP/s). On an H200 at
# n = 1024, d = 64 two splits took 0.179 ms, one 0.083 ms.
MIN_SPLIT_FLOP = 2e9
MERGE_THREADS = 256


@dataclass(frozen=True)
class ThreadTileConfig:
    """A float32 block of 16 x 16 threads, each owning a rows_per_thread x keys_per_thread tile.

    The outer-product layout of CUDA-core matrix products: a thread reads rows_per_thread
    query chunks and keys_per_thread key chunks from shared memory for each 4 features and
    does rows_per_thread x keys_per_thread x 4 FMAs with them, where the row-per-thread kernel
    did 4 FMAs per shared load; the same for P V. Rows of the tile are shared by 16 threads,
    which agree on the running row maximum through shared memory (the simulator has no
    warp shuffles).
    """

    dtype: str
    width: int  # features of Q, K and V held in shared memory (d_k, d_v <= width)
    rows_per_thread: int
    keys_per_thread: int
    min_blocks: int = 1
    unroll: int = 1  # 4-feature (and 4-key) steps per loop iteration: fewer loop instructions
    grouped: bool = False  # fewer key/value heads than query heads: K, V rows of b // group

    def __post_init__(self):
        if (self.width // 4) % self.unroll or (self.keys // 4) % self.unroll:
            raise ValueError(f"unroll must divide the 4-feature and 4-key steps: {self}")

    @property
    def rows(self) -> int:
        return GRID_SIDE * self.rows_per_thread

    @property
    def keys(self) -> int:
        return GRID_SIDE * self.keys_per_thread

    @property
    def threads(self) -> int:
        return GRID_SIDE * GRID_SIDE

    @property
    def shared_bytes(self) -> int:
        tiles = (self.rows + 2 * self.keys) * self.width  # Q, K, V
        scores = self.rows * self.keys
        row_maxima = self.rows * GRID_SIDE
        return (tiles + scores + row_maxima) * np.dtype(self.dtype).itemsize


def thread_tile_config(width: int, rows: int) -> ThreadTileConfig:
    """The thread-tiled float32 variant for a width and block height: the most keys that fit.

    Two blocks per multiprocessor (min_blocks = 2 caps registers at 128; ptxas: 120-128, no
    spills), so a grid of 2 x the multiprocessors' count runs in one wave.
    """
    for keys_per_thread in (4, 2):
        cfg = ThreadTileConfig(
            "float32",
            width,
            rows // GRID_SIDE,
            keys_per_thread,
            BLOCKS_PER_MULTIPROCESSOR,
            UNROLL[width],
        )
        if cfg.shared_bytes <= STATIC_SHARED_LIMIT:
            return cfg
    raise ValueError(f"no thread tile of width {width} and {rows} rows fits shared memory")


def key_splits(row_blocks: int, keys: int, slots: int, causal: bool, flop: float) -> int:
    """How many blocks share each row tile's keys, so that the grid fills the GPU.

    One head at n = 8192 is 128 row tiles of 64: a block each leaves half of an H200's 264
    block slots empty (0.956 ms; two splits 0.829 ms, then a merge). Causal blocks differ in
    length, and the longest sets the time unless there are twice as many blocks as slots
    (n = 8192 causal: 4 splits 0.449 ms, 1 split 0.955 ms).
    """
    if flop < MIN_SPLIT_FLOP:
        return 1
    wanted = (2 if causal else 1) * slots // row_blocks
    return max(1, min(MAX_SPLITS, keys // MIN_SPLIT_KEYS, wanted))


def thread_tile_rows(batch: int, n_q: int, keys: int, slots: int, causal: bool, flop: float) -> int:
    """64 rows per block (4 per thread) unless 32-row blocks fill more of the GPU's slots.

    4 rows per thread get more FMAs out of each shared load than 2 (n = 16384 on an H200:
    21.2 against 16.4 TFLOP/s); key splits fill the GPU with them down to n = 4096 for one
    head. Below that splits are too short or too cheap to pay for the merge's launch, and
    32-row blocks fill more (n = 2048, no splits: 0.161 ms against 0.243 ms).
    """

    def filled(rows: int) -> float:
        row_blocks = batch * -(-n_q // rows)
        splits = key_splits(row_blocks, keys, slots, causal, flop)
        return min(1.0, row_blocks * splits / slots)

    return 64 if filled(64) >= min(GRID_FILL, filled(32)) else 32


def kernel_config(dtype: str, width: int, rows: int):
    """The variant prepare() launches: thread-tiled for float32 widths 32 and 64, else a row
    per thread group."""
    if dtype == "float32" and width in THREAD_TILE_WIDTHS:
        return thread_tile_config(width, rows)
    return tile_config(dtype, width, rows)


def width_for(d_k: int, d_v: int) -> int:
    """Smallest compiled width holding both feature dimensions; the widest, in chunks, beyond."""
    d = max(d_k, d_v)
    return next((w for w in WIDTHS if w >= d), WIDTHS[-1])


def is_simulated() -> bool:
    """True when numba runs CUDA kernels in its Python simulator (NUMBA_ENABLE_CUDASIM=1)."""
    if importlib.util.find_spec("numba") is None:
        return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")
    from numba.core import config

    return bool(config.ENABLE_CUDASIM)


def unavailable_reason() -> str | None:
    if importlib.util.find_spec("numba_cuda") is None:
        return "numba-cuda is not installed (pip install 'attnbench[cuda]')"
    from numba import cuda

    if getattr(cuda, "implementation", None) != "NVIDIA":
        return "numba.cuda is numba's deprecated built-in target, not the numba-cuda package"
    if is_simulated():
        return None
    if not cuda.is_available():
        return "no CUDA GPU; set NUMBA_ENABLE_CUDASIM=1 to simulate"
    return None


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


def launch_plan(args, config=None, splits: int | None = None):
    """The tiles and key splits prepare() launches for these inputs: (config, splits).

    `config` and `splits` override the choice (for tuning) and are checked against the shapes.
    """
    batch, n_q, d_k = args.q.shape
    d_v = args.v.shape[2]
    causal = bool(args.causal)
    keys = min(args.k.shape[1], n_q) if causal else args.k.shape[1]  # the longest row tile's
    flop = 2 * batch * n_q * keys * (d_k + d_v)  # as if no mask: causal blocks wait on the longest
    multiprocessors = _multiprocessors()
    slots = BLOCKS_PER_MULTIPROCESSOR * multiprocessors  # thread-tiled blocks at once
    cfg = config
    if cfg is None:
        dtype, width = args.dtype.name, width_for(d_k, d_v)
        if dtype == "float32" and width in THREAD_TILE_WIDTHS:
            rows = thread_tile_rows(batch, n_q, keys, slots, causal, flop)
        else:
            col_blocks = -(-d_v // tile_config(dtype, width).v_width)
            blocks_at_64_rows = batch * -(-n_q // 64) * col_blocks
            rows = block_rows(dtype, blocks_at_64_rows, multiprocessors, causal)
        cfg = kernel_config(dtype, width, rows)
    cfg = replace(cfg, grouped=args.group > 1)
    if not isinstance(cfg, ThreadTileConfig):
        if splits not in (None, 1):
            raise ValueError(f"splits are for thread-tiled configs, got {splits} for {cfg}")
        return cfg, 1
    if max(d_k, d_v) > cfg.width:
        raise ValueError(f"d_k = {d_k} and d_v = {d_v} must fit the tile width {cfg.width}")
    if splits is None:
        splits = key_splits(batch * -(-n_q // cfg.rows), keys, slots, causal, flop)
    if splits < 1:
        raise ValueError(f"splits must be at least 1, got {splits}")
    return cfg, splits


def prepare(args, config=None, splits: int | None = None):
    """Copies the inputs to the GPU (transfer_s) and compiles; computes nothing: every step on
    the device is `run`'s. `config` and `splits` override the plan (for tuning)."""
    from numba import cuda

    batch, n_q, _ = args.q.shape
    d_v = args.v.shape[2]
    causal = bool(args.causal)
    cfg, splits = launch_plan(args, config, splits)
    kernel = _kernel(cfg)
    start = time.perf_counter()
    dq, dk, dv = (cuda.to_device(np.ascontiguousarray(x)) for x in (args.q, args.k, args.v))
    cuda.synchronize()
    h2d_s = time.perf_counter() - start
    out = cuda.device_array((batch, n_q, d_v), args.dtype)
    row_blocks = batch * -(-n_q // cfg.rows)
    scale_log2 = args.scale * LOG2E
    if isinstance(cfg, ThreadTileConfig):
        part_shape = (batch * splits, n_q, d_v) if splits > 1 else (1, 1, 1)
        o_part = cuda.device_array(part_shape, np.float32)
        ml_part = cuda.device_array((*part_shape[:2], 2), np.float32)
        arrays = (dq, dk, dv, out, o_part, ml_part) if splits > 1 else (dq, dk, dv, out)
        launch = kernel[row_blocks * splits, cfg.threads]
        launches = [(launch, (dq, dk, dv, out, o_part, ml_part, scale_log2, causal, splits))]
        if splits > 1:
            merge = _merge_kernel()[-(-out.size // MERGE_THREADS), MERGE_THREADS]
            launches.append((merge, (o_part, ml_part, out, splits)))
    else:
        arrays = (dq, dk, dv, out)
        grid = (row_blocks, -(-d_v // cfg.v_width))
        launches = [(kernel[grid, cfg.threads], (*arrays, scale_log2, causal))]
    state = {
        "config": cfg,
        "splits": splits,
        "launches": launches,
        "arrays": arrays,
        "h2d_s": h2d_s,
        "d2h_s": 0.0,
    }
    if not is_simulated():  # load the modules onto the GPU now, so that no run pays for it
        for launch, _ in launches:
            for compiled in launch.dispatcher.overloads.values():
                compiled.bind()
    return state


def _multiprocessors() -> int:
    """The GPU's multiprocessor count; the simulator runs blocks one at a time, so 1."""
    from numba import cuda

    if is_simulated():
        return 1
    return cuda.get_current_device().MULTIPROCESSOR_COUNT


def _launch(state) -> None:
    for launch, arguments in state["launches"]:
        launch(*arguments)


def run(state):
    from numba import cuda

    _launch(state)
    cuda.synchronize()


def fetch(state):
    from numba import cuda

    start = time.perf_counter()
    out = state["arrays"][3].copy_to_host()
    cuda.synchronize()
    state["d2h_s"] = time.perf_counter() - start
    return out


def event_time_s(state) -> float:
    """One run timed on the GPU with CUDA events, in seconds.

    An untimed launch goes first, so the GPU is still busy with it while the host queues the
    timed one: the start event fires when that kernel can begin, and the host's launch
    overhead (tens of microseconds in numba) stays out of the figure, as long as one kernel
    outlasts one launch on the host (marginal below ~50 us per call; with key splits a run is
    two launches, the kernel and the merge, which is why splits wait for 2 GFLOP of work).
    Each sample costs two runs of GPU time. The simulator's events record nothing, so there it
    is the wall-clock time of the (synchronous) simulated launch.
    """
    from numba import cuda

    if is_simulated():
        start = time.perf_counter()
        run(state)
        return time.perf_counter() - start
    start, end = cuda.event(timing=True), cuda.event(timing=True)
    _launch(state)
    start.record()
    _launch(state)
    end.record()
    end.synchronize()
    return cuda.event_elapsed_time(start, end) / 1e3


def transfer_s(state) -> float:
    """Host-to-device copies (prepare) plus the last device-to-host copy (fetch)."""
    return state["h2d_s"] + state["d2h_s"]


def device_memory_bytes(state) -> int:
    """Q, K, V, the output and the key splits' partial outputs: no n x n buffer."""
    return int(sum(a.nbytes for a in state["arrays"]))
