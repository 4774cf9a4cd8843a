"""The tiles and launch choices of numba_cuda: compile-time tile configs, block heights, key
splits. Pure Python (no numba import). Each constant says how it was chosen; the figures that
chose them are in docs/kernels/numba_cuda.md ("How the launch choices were measured")."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

DTYPES = ("float32", "float64")
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


@dataclass(frozen=True)
class LaunchTuning:
    """The launch choices of one GPU architecture: how full a grid must be, when to split keys."""

    grid_fill: float  # share of the multiprocessors' block slots a 64-row grid must fill
    causal_waves: int  # waves of 64-row blocks a causal grid needs to balance its unequal blocks
    max_splits: int  # key splits per row tile
    min_split_keys: int  # shorter splits spend more on loading Q and merging than they gain
    # The merge is a second launch, which costs numba's host side tens of microseconds: splits
    # pay only for attention of at least this many FLOPs.
    min_split_flop: float
    # float32 widths the tensor-core kernel (mma_kernel.py) takes, each from a least number of
    # keys: (width, least n_k) pairs. Only on compute capability >= TENSOR_CORE_ARCHITECTURE.
    tensor_cores: tuple[tuple[int, int], ...] = ()


# By compute capability. sm_90 was measured on an H200 (docs/kernels/numba_cuda.md); an
# architecture not in the table is planned as sm_90 until it is measured. Its tensor-core
# routing awaits measurement: no GPU has run the tensor-core kernel yet. At d = 128 the
# CUDA-core kernels fall far behind torch's 3xTF32 on tensor cores (docs/PERFORMANCE.md), so
# d = 128 goes to the tensor cores at every n; at d = 64 the thread-tiled kernel leads torch
# up to n = 8192 (measured) and only longer sequences go; d = 32 stays on the CUDA cores (it
# leads torch there, measured).
LAUNCH_TUNING = {
    (9, 0): LaunchTuning(
        grid_fill=0.9,
        causal_waves=2,
        max_splits=8,
        min_split_keys=512,
        min_split_flop=2e9,
        tensor_cores=((128, 0), (64, 16384)),
    ),
}
MEASURED_ARCHITECTURE = (9, 0)
MEASURED_TUNING = LAUNCH_TUNING[MEASURED_ARCHITECTURE]


def launch_tuning(compute_capability: tuple[int, int]) -> LaunchTuning:
    """The table's entry for this architecture, or the measured one's where it has none."""
    return LAUNCH_TUNING.get(tuple(compute_capability), MEASURED_TUNING)


def block_rows(
    dtype: str,
    blocks_at_64_rows: int,
    multiprocessors: int,
    causal: bool,
    tuning: LaunchTuning = MEASURED_TUNING,
) -> int:
    """The row kernel's block height: 64 rows where that grid still fills `grid_fill` of its
    waves' block slots, else 32 (measured with the row kernel at d = 64).

    Taller blocks share each K/V tile among more rows, but halve the blocks: one head at
    n = 4096 in 64-row blocks would leave half of an H200's multiprocessors idle. At d = 64
    (242-254 registers per thread) one 256-thread block runs per multiprocessor. Causal blocks
    differ in length (the kernel starts the longest first), and the longest bounds the time
    unless there are `causal_waves` waves of blocks to balance it.
    """
    if dtype != "float32":
        return 32
    if causal and blocks_at_64_rows < tuning.causal_waves * tuning.grid_fill * multiprocessors:
        return 32
    waves = -(-blocks_at_64_rows // multiprocessors)
    return 64 if blocks_at_64_rows >= tuning.grid_fill * waves * multiprocessors else 32


GRID_SIDE = 16  # thread-tiled blocks: 16 x 16 threads, 16 row groups by 16 key (column) groups
THREAD_TILE_WIDTHS = (32, 64)  # float32 widths of the thread-tiled kernel; others: row per thread
# Feature (and key) steps per loop iteration: the faster of 1 and 2 per width, measured.
UNROLL = {32: 1, 64: 2}
# A thread-tiled block uses <= 128 registers (launch bound of 2 blocks) and <= 44 KiB of
# shared memory: two fit on a multiprocessor.
BLOCKS_PER_MULTIPROCESSOR = 2
# Threads per block of the merge of key splits (one output element each): a full block of
# eight warps; the merge reads each split's partial output once and is not tuned.
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


def key_splits(
    row_blocks: int,
    keys: int,
    slots: int,
    causal: bool,
    flop: float,
    tuning: LaunchTuning = MEASURED_TUNING,
) -> int:
    """How many blocks share each row tile's keys, so that the grid fills the GPU.

    One head at n = 8192 is 128 row tiles of 64: a block each leaves half of an H200's 264
    block slots empty; two splits, then a merge, fill them. Causal blocks differ in
    length, and the longest sets the time unless there are twice as many blocks as slots
    (docs/kernels/numba_cuda.md has the timings).
    """
    if flop < tuning.min_split_flop:
        return 1
    wanted = (2 if causal else 1) * slots // row_blocks
    return max(1, min(tuning.max_splits, keys // tuning.min_split_keys, wanted))


def thread_tile_rows(
    batch: int,
    n_q: int,
    keys: int,
    slots: int,
    causal: bool,
    flop: float,
    tuning: LaunchTuning = MEASURED_TUNING,
) -> int:
    """64 rows per block (4 per thread) unless 32-row blocks fill more of the GPU's slots.

    4 rows per thread get more FMAs out of each shared load than 2; key splits fill the GPU
    with them down to n = 4096 for one head. Below that splits are too short or too cheap to
    pay for the merge's launch, and 32-row blocks fill more.
    """

    def filled(rows: int) -> float:
        row_blocks = batch * -(-n_q // rows)
        splits = key_splits(row_blocks, keys, slots, causal, flop, tuning)
        return min(1.0, row_blocks * splits / slots)

    return 64 if filled(64) >= min(tuning.grid_fill, filled(32)) else 32


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


# The tensor-core kernel (mma_kernel.py): float32 through mma.sync m16n8k8 TF32, sm_80 and later.
TENSOR_CORE_ARCHITECTURE = (8, 0)
MMA_WIDTHS = (32, 64, 128)
MMA_WARPS = 4  # warps per block, each owning WARP_ROWS query rows
WARP_ROWS = 16  # the instruction's M
# Keys per K/V tile: K and V tiles, each keys x (width + MMA_PAD) float32, share the 48 KiB of
# static shared memory with room for two blocks per multiprocessor (d = 128: 33 KiB per block).
MMA_KEYS = {32: 64, 64: 64, 128: 32}
MMA_PAD = 4  # row stride width + 4: the 8 keys x 4 features of a fragment fall on 32 banks
MMA_PASSES = {3: "3xTF32", 1: "TF32"}


@dataclass(frozen=True)
class MmaConfig:
    """A float32 block of MMA_WARPS warps on the tensor cores, each owning 16 query rows.

    `passes` = 3 is 3xTF32 (each product as hi*hi + hi*lo + lo*hi of TF32 halves: float32
    accuracy), 1 plain TF32 (one product of inputs rounded to 10 mantissa bits: about 1e-3
    relative error per score, for a looser tolerance only).
    """

    dtype: str
    width: int  # features of Q, K and V in the tiles (d_k, d_v <= width)
    keys: int  # keys per K/V tile
    passes: int = 3
    min_blocks: int = 2  # launch bound: 128 threads x 255 registers fit twice per SM

    def __post_init__(self):
        if self.dtype != "float32" or self.width not in MMA_WIDTHS:
            raise ValueError(f"the tensor-core kernel is float32 of widths {MMA_WIDTHS}: {self}")
        if self.keys % 8 or (self.keys * self.width) % self.threads or self.passes not in (1, 3):
            raise ValueError(f"keys must be whole 8-key fragments, passes 1 or 3: {self}")

    @property
    def rows(self) -> int:
        return MMA_WARPS * WARP_ROWS

    @property
    def threads(self) -> int:
        return MMA_WARPS * 32

    @property
    def stride(self) -> int:
        """Floats per key in the shared K and V tiles."""
        return self.width + MMA_PAD

    @property
    def shared_bytes(self) -> int:
        return 2 * self.keys * self.stride * np.dtype(self.dtype).itemsize

    @property
    def precision(self) -> str:
        return MMA_PASSES[self.passes]


def mma_config(width: int, passes: int = 3) -> MmaConfig:
    return MmaConfig("float32", width, MMA_KEYS[width], passes)


def uses_tensor_cores(
    dtype: str,
    d: int,
    n_q: int,
    n_k: int,
    compute_capability: tuple[int, int],
    tuning: LaunchTuning = MEASURED_TUNING,
) -> bool:
    """Whether the tuning table sends these shapes to the tensor-core kernel: float32, d =
    max(d_k, d_v) up to 128, compute capability 8.0 or later, n_k at least the table's least
    for the width, and at least one warp's 16 query rows (decode stays on the CUDA cores,
    where a 16-row fragment would compute 15 rows of nothing for each real one)."""
    if dtype != "float32" or tuple(compute_capability) < TENSOR_CORE_ARCHITECTURE:
        return False
    if d > MMA_WIDTHS[-1] or n_q < WARP_ROWS:
        return False
    least = dict(tuning.tensor_cores).get(width_for(d, d))
    return least is not None and n_k >= least
