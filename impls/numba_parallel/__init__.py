"""Fused attention in Numba: prange over query-row blocks, tiled online softmax (FlashAttention).

The algorithm. For a query row q_i (pre-scaled by scale * log2(e), so that exp(scale q.k) =
2^s) the keys are visited in blocks; the row keeps a running maximum m, a running sum l and an
unnormalised output o, and for each block of scores s_k = q_i . k:

    m_new = max(m, max_k s_k);  alpha = 2^(m - m_new);  p_k = 2^(s_k - m_new)
    l = alpha * l + sum_k p_k;  o = alpha * o + sum_k p_k v_k;  m = m_new

and at the end out_i = o / l. Every exponent is at most 0, so nothing overflows; the n_q x n_k
score matrix is never built (extra memory: packed copies of q, k, v and the output, O(n d),
plus one score tile per task).

What each loop owns (the tiled path, `kernels.attention_kernel`): a parallel task is one query
block of one batch entry; for each key block it computes the score tile (the scores
microkernel: a register tile of rows x columns held in registers over the reduction), the
online-softmax step over it in place, and adds p @ v to its rows (the accumulate microkernel).
With the causal mask, key blocks wholly above the diagonal are skipped and masked columns left
out by loop bounds. Grouped-query heads read the key/value entry b // group. A few query rows
per key/value head (decode) take `decode.decode_kernel`: key ranges split across tasks
(split-K), k and v read once in place (or first copied into C order, if not C-contiguous),
the ranges' states merged at the end.

This module plans a call (the register tile for the target's vectors, block sizes, the path)
and runs it; kernels.py holds the tiled path's compiled code, decode.py the decode path's.
docs/kernels/numba_parallel.md has the design in full, docs/PERFORMANCE.md the figures.
"""

from __future__ import annotations

import functools
import inspect
import math
import statistics
import threading
import time

import numpy as np

from impls.numba_parallel import decode, kernels
from impls.numba_parallel.kernels import BLOCK_KEYS, numba

NAME = "numba_parallel"
DESCRIPTION = "Numba prange, fused tiled online softmax (FlashAttention-style), SLP-vectorised"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cpu"
STYLE = ("#ff7f0e", "^")  # colour and marker in every figure

# The tuning table: every size the plan chooses, and how it was chosen (the measurements are in
# docs/kernels/numba_parallel.md).
#
# Register tiles (rows, columns) per dtype, by the widest vector the target compiles to. A tile
# holds rows x (columns / lanes) accumulators; LLVM keeps each row's broadcast live too, plus a
# load: AVX2's 16 ymm take 3 rows of four vectors (12 + 3 + 1: 12 FMAs for 7 loads and
# broadcasts, measured faster than 5 rows of two, 10 + 5 + 1, where 6 rows spill);
# AVX-512's 32 zmm take 8 rows of two vectors for float32 (16 + 8 + 1; the fastest on an Intel
# AVX-512 core, where 12 and 14 rows spill) and 5 rows of four for float64 (20 + 5 + 1,
# measured faster there than 8 rows of two, 4 rows of four and 6 rows of four). 128-bit
# targets (SSE, NEON) get a tile that fits 16.
TILES = {
    512: {"float32": (8, 32), "float64": (5, 32)},
    256: {"float32": (3, 32), "float64": (3, 16)},
    128: {"float32": (4, 8), "float64": (4, 4)},
}
# Query rows per parallel task, nominally: the largest of MAX_BLOCK_QUERIES, its halves, down
# to BLOCK_QUERIES, that still gives every thread TASKS_PER_THREAD tasks. 256 rows instead of
# 64 read k and v a quarter as often, measured faster on long sequences. With the causal mask a
# block computes its diagonal band in full, rows / n_q more work in all: blocks of at most
# n_q / CAUSAL_ROWS_DIVISOR rows bound that to 1/32 (the divisor measured against 16, against
# the smallest blocks and against 256 rows whatever n_q: docs/kernels/numba_parallel.md).
BLOCK_QUERIES = {"float32": 64, "float64": 32}
MAX_BLOCK_QUERIES = 256
TASKS_PER_THREAD = 8
CAUSAL_ROWS_DIVISOR = 32
# The decode path's register tiles, which read k and v in place: blocks of `rows` query rows;
# for the scores, `keys` dot products per row at once, each a vector reduction along d; for
# p @ v, strips of `columns` values. rows x keys accumulators for the scores and rows x
# (columns / lanes) for p @ v, with the rows' loads, fit the register file (16 ymm: 4 x 2 and
# 4 x 2 vectors; 32 zmm: 4 x 4 and 4 x 4 vectors).
DECODE_TILES = {
    512: {"float32": (4, 4, 64), "float64": (4, 4, 32)},
    256: {"float32": (4, 2, 16), "float64": (4, 2, 8)},
    128: {"float32": (4, 2, 8), "float64": (4, 2, 4)},
}
# The tiles vectorise along each key's row, which needs k and v C-contiguous: a caller's other
# layouts (a cache stored sequence-major and seen head-major, say) are copied into C order first,
# in `run` (measured faster than the same loops on single rows, keys and columns in place, and
# one compiled kernel per dtype whatever the layout).
# The decode path runs up to this many query rows per key/value head (measured faster than the
# tiled path up to 32), each key range of at least DECODE_MIN_SPLIT_KEYS keys, so that merging
# the ranges costs little.
DECODE_MAX_ROWS = 32
DECODE_MIN_SPLIT_KEYS = 256
# The decode path can ask for the keys and values a tile ahead (decode.DECODE_TILE_KEYS rows,
# into L2): that pays where they come from DRAM (on some machines from L3 too) and only costs
# where they are in a nearer cache. Which it is depends on the machine and on the cache the
# process really gets, which a VM's sysfs may overstate, so the first decode call of each size
# (to the next power of two) times both on scratch inputs of its shapes and keeps the faster:
# AHEAD_PAIRS pairs (after AHEAD_WARM_PAIRS) of batches of calls of AHEAD_BATCH_SECONDS, as the
# caller's calls back to back find k and v (single calls alternating chose otherwise:
# docs/kernels/numba_parallel.md). Under AHEAD_MIN_BYTES of k and v: none; from
# AHEAD_MAX_BYTES, more than the largest caches a few cores see, a tile ahead untimed, so that
# no scratch copy of a large KV cache is ever allocated.
AHEAD_PAIRS = 8
AHEAD_WARM_PAIRS = 2
AHEAD_BATCH_SECONDS = 0.003
AHEAD_MIN_BYTES = 4 << 20
AHEAD_MAX_BYTES = 256 << 20

# The smallest LLVM IR that shows the target's widest vector: a 16-float add compiles to one
# zmm instruction where 512-bit vectors exist (and are allowed, as the kernels allow them),
# to ymm on AVX2, to xmm (or NEON's v registers) otherwise.
_PROBE_IR = """
define void @probe(ptr %p) "prefer-vector-width"="512" {
  %x = load <16 x float>, ptr %p
  %y = fadd <16 x float> %x, %x
  store <16 x float> %y, ptr %p
  ret void
}
"""


def unavailable_reason() -> str | None:
    return kernels.NUMBA_IMPORT_ERROR


@functools.cache
def vector_bits() -> int:
    """The widest vector, in bits, of the target Numba compiles for.

    That target is NUMBA_CPU_NAME and NUMBA_CPU_FEATURES where set, else the host; note that
    Numba keeps the host's features when only the name is set (haswell on an AVX-512 host
    still compiles to AVX-512), so holding it to AVX2 takes NUMBA_CPU_FEATURES too.
    """
    from llvmlite import binding as llvm
    from numba.core.codegen import get_host_cpu_features

    config = numba.config
    cpu = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES if config.CPU_FEATURES is not None else get_host_cpu_features()
    machine = llvm.Target.from_default_triple().create_target_machine(cpu=cpu, features=features)
    assembly = machine.emit_assembly(llvm.parse_assembly(_PROBE_IR))
    return 512 if "zmm" in assembly else 256 if "ymm" in assembly else 128


def decode_tile(dtype: str) -> tuple[int, int, int]:
    """(rows, keys, columns) of the decode path's register tiles for the target's vectors."""
    return DECODE_TILES[vector_bits()][dtype]


def tile(dtype: str) -> tuple[int, int]:
    """(rows, columns) of the register tile for this dtype on the target."""
    return TILES[vector_bits()][dtype]


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def packed_shapes(
    batch: int, n_q: int, n_k: int, d_k: int, d_v: int, dtype: str, kv_batch: int | None = None
) -> tuple:
    """Shapes of the kernel's q (rows padded to the tile's), k (k^T in strips of the tile's
    columns per key block) and v (per key block, d_v in strips), zero padded to whole tiles;
    k and v have kv_batch entries (fewer than q's with grouped-query attention)."""
    rows, width = tile(dtype)
    kv_batch = batch if kv_batch is None else kv_batch
    n_blocks = -(-n_k // BLOCK_KEYS)
    return (
        (batch, _round_up(n_q, rows), d_k),
        (kv_batch, n_blocks, BLOCK_KEYS // width, d_k, width),
        (kv_batch, n_blocks, -(-d_v // width), BLOCK_KEYS, width),
    )


def query_blocks(dtype: str, batch: int, n_q: int, threads: int, causal: bool) -> int:
    """Query blocks per batch entry (parallel tasks: batch times this), of equal size.

    Large blocks read k and v fewer times; smaller blocks keep enough tasks to balance the
    threads on short sequences (see the table above). The task count is rounded up to a
    multiple of the threads, so that no thread gets one block more than another (unless there
    are fewer than a tile's rows per block to go round, where blocks stop at a tile).
    """
    rows = MAX_BLOCK_QUERIES
    while rows > BLOCK_QUERIES[dtype] and (
        batch * -(-n_q // rows) < TASKS_PER_THREAD * threads
        or (causal and rows * CAUSAL_ROWS_DIVISOR > n_q)
    ):
        rows //= 2
    blocks = _round_up(-(-n_q // rows), threads // math.gcd(batch, threads))
    return min(blocks, -(-n_q // tile(dtype)[0]))


def uses_decode(n_q: int, group: int, causal: bool) -> bool:
    """The decode path for a few query rows per key/value head (without the causal mask, under
    which a few queries see a few keys only); the tiled path otherwise."""
    return not causal and group * n_q <= DECODE_MAX_ROWS


@functools.cache
def decode_splits(kv_batch: int, n_k: int, threads: int) -> int:
    """Key ranges per key/value head: enough tasks to keep every thread busy, each range long
    enough (DECODE_MIN_SPLIT_KEYS) that its merge costs little."""
    wanted = -(-TASKS_PER_THREAD * threads // kv_batch)
    return max(1, min(wanted, n_k // DECODE_MIN_SPLIT_KEYS))


@functools.lru_cache(maxsize=1)
def _packed_buffers(runner: int, q_shape, k_shape, v_shape, dtype: str) -> tuple:
    """The packed q, k and v of the running thread, kept for its next call of the same shapes
    (None for a shape of None: the decode path copies only what is not C-contiguous).

    Fresh buffers cost every call their page faults (n = 2048, d = 64: a 3.9 ms call where the
    kernel takes 3.0), which a library that keeps its workspace never pays; `release_workspace`
    frees them. Keyed by the thread that runs, not the one that prepared: calls run one after
    another in a thread, each packing its own inputs first, so sharing is safe; calls run at
    once are in different threads. The padding is zeroed here once and never written.
    """
    shapes = (q_shape, k_shape, v_shape)
    return tuple(None if shape is None else kernels.aligned_zeros(shape, dtype) for shape in shapes)


def _running_buffers(state) -> tuple:
    return _packed_buffers(threading.get_ident(), *state["packed_shapes"])


def release_workspace() -> None:
    """Free the kept packed buffers (the harness does, so that a call's memory counts them)."""
    _packed_buffers.cache_clear()


def prepare(args):
    """Plan the packed buffers (the running thread's, kept between calls), allocate the output,
    and compile for these argument types (or load from the disk cache). Reads no value of q, k
    or v: packing them is part of `run`."""
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
        tile_rows, tile_keys, tile_columns = decode_tile(dtype.name)
        inputs = (args.q, args.k, args.v)
        state.update(
            path="decode",
            packed_shapes=(*(None if x.flags.c_contiguous else x.shape for x in inputs), dtype.str),
            splits=splits,
            ahead=0,  # chosen once compiled: decode_ahead times the compiled kernel
            decode_tile=(tile_rows, tile_keys, tile_columns),
            tile=kernels.tile_argument(rows=tile_rows, keys=tile_keys, columns=tile_columns),
            part_max=np.empty((kv_batch, splits, rows), dtype),
            part_sum=np.empty((kv_batch, splits, rows), dtype),
            part_out=kernels.aligned_zeros((kv_batch, splits, rows, d_v), dtype),
            out=np.empty((batch, n_q, d_v), dtype),
        )
    else:
        q_shape, k_shape, v_shape = packed_shapes(batch, n_q, n_k, d_k, d_v, dtype.name, kv_batch)
        tile_rows, tile_columns = tile(dtype.name)
        state.update(
            path="tiled",
            tile=kernels.tile_argument(rows=tile_rows, columns=tile_columns),
            packed_shapes=(q_shape, k_shape, v_shape, dtype.str),
            out=kernels.aligned_zeros((batch, q_shape[1], v_shape[2] * v_shape[4]), dtype),
            query_blocks=query_blocks(dtype.name, batch, n_q, threads, bool(args.causal)),
        )
    _compile(state)
    if state["path"] == "decode":
        state["ahead"] = decode_ahead(state)
    return state


_AHEAD: dict[tuple, int] = {}  # (dtype, size class of k and v, threads) -> rows ahead


def decode_ahead(state) -> int:
    """Rows ahead that the decode path asks for, for k and v of this call's size: none under
    AHEAD_MIN_BYTES, a tile from AHEAD_MAX_BYTES, else whichever of the two ran faster on this
    size's first call."""
    args = state["args"]
    kv_bytes = args.k.nbytes + args.v.nbytes
    if kv_bytes < AHEAD_MIN_BYTES:
        return 0
    if kv_bytes >= AHEAD_MAX_BYTES:
        return decode.DECODE_TILE_KEYS
    key = (args.dtype.str, kv_bytes.bit_length(), numba.get_num_threads())
    if key not in _AHEAD:
        _AHEAD[key] = _faster_ahead(state)
    return _AHEAD[key]


def _faster_ahead(state) -> int:
    """Time the decode kernel with no prefetch and with a tile ahead on scratch inputs of the
    call's shapes and Numba types (the compiled kernel serves them; prepare reads no value of
    the caller's): pairs of batches of calls back to back, as the caller's calls find their k
    and v, in alternating order; a tile ahead where the median of its time over none's is
    below 1 (a ratio per pair: the machine's drift between pairs cancels)."""
    arguments = list(_decode_arguments(state, copy=False))
    for index, array in enumerate(arguments[:3]):
        scratch = np.full(array.shape, 0.5, array.dtype)  # every page touched; exp2(0) = 1
        scratch.setflags(write=array.flags.writeable)
        if numba.typeof(scratch) != numba.typeof(array):  # unaligned: another kernel
            return 0
        arguments[index] = scratch

    position = list(inspect.signature(decode.decode_kernel).parameters).index("ahead")

    def seconds(ahead: int, calls: int) -> float:
        arguments[position] = ahead
        start = time.perf_counter()
        for _ in range(calls):
            decode.decode_kernel(*arguments)
        return time.perf_counter() - start

    calls = max(1, int(AHEAD_BATCH_SECONDS / seconds(0, 1)))
    tile, ratios = decode.DECODE_TILE_KEYS, []
    for pair in range(AHEAD_WARM_PAIRS + AHEAD_PAIRS):
        order = (0, tile) if pair % 2 == 0 else (tile, 0)
        batch = {ahead: seconds(ahead, calls) for ahead in order}
        if pair >= AHEAD_WARM_PAIRS:
            ratios.append(batch[tile] / batch[0])
    return tile if statistics.median(ratios) < 1 else 0


def variant(state) -> str:
    """Which code ran: the tiled path with its register tile and vector width, or the decode
    path with its two tiles and its key ranges."""
    if state["path"] == "decode":
        rows, keys, columns = state["decode_tile"]
        return (f"decode {rows}x{keys} scores, {rows}x{columns} values, {vector_bits()}-bit "
                f"vectors, {state['splits']} key ranges, "
                f"{'prefetch' if state['ahead'] else 'no prefetch'}")  # fmt: skip
    rows, columns = tile(state["args"].dtype.name)
    return f"tiled {rows}x{columns}, {vector_bits()}-bit vectors"


_COMPILED: set[tuple] = set()  # the (path, argument kinds) compiled for in this process


def _compile(state) -> None:
    """Compile the path's functions for the types of this call's arguments, or load them from
    the disk cache, once per kind of argument (numba types an array by dtype, layout, flags)."""
    args = state["args"]
    kind = (state["path"], *((a.dtype.str, a.flags.c_contiguous, a.flags.f_contiguous,
            a.flags.writeable, a.flags.aligned) for a in (args.q, args.k, args.v)))  # fmt: skip
    if kind in _COMPILED:
        return
    with kernels.slp_vectorizer_on():
        if state["path"] == "decode":
            decode.decode_kernel.compile(_signature(_decode_arguments(state, copy=False)))
        else:
            buffers = _running_buffers(state)
            kernels.pack_inputs.compile(_signature(_pack_arguments(state, buffers)))
            kernels.attention_kernel.compile(_signature(_kernel_arguments(state, buffers)))
    _COMPILED.add(kind)


def _signature(arguments: tuple) -> tuple:
    return tuple(numba.typeof(a) for a in arguments)


def _decode_arguments(state, copy: bool = True) -> tuple:
    """The decode kernel's arguments: the caller's q, k and v where C-contiguous, else their
    copies in C order (made here with `copy`), in the running thread's kept buffers."""
    args = state["args"]
    copied = any(shape is not None for shape in state["packed_shapes"][:3])
    # Asked for only when something is copied, so that the one kept workspace stays the tiled
    # path's when the caller's arrays are C-contiguous.
    buffers = _running_buffers(state) if copied else (None, None, None)
    inputs = []
    for x, buffer in zip((args.q, args.k, args.v), buffers, strict=True):
        if buffer is not None and copy:
            np.copyto(buffer, x)
        inputs.append(x if buffer is None else buffer)
    return (*inputs, state["q_factor"], state["splits"], state["ahead"], state["part_max"],
            state["part_sum"], state["part_out"], state["out"], state["tile"])  # fmt: skip


def _pack_arguments(state, buffers: tuple) -> tuple:
    args = state["args"]
    return (args.q, args.k, args.v, state["q_factor"], *buffers)


def _kernel_arguments(state, buffers: tuple) -> tuple:
    return (*buffers, state["out"], state["n_k"], state["causal"],
            state["query_blocks"], state["tile"])  # fmt: skip


def run(state):
    if state["path"] == "decode":
        decode.decode_kernel(*_decode_arguments(state))
        return
    buffers = _running_buffers(state)  # once: another thread's call may evict them meanwhile
    kernels.pack_inputs(*_pack_arguments(state, buffers))
    kernels.attention_kernel(*_kernel_arguments(state, buffers))


def fetch(state):
    return state["out"][:, : state["n_q"], : state["d_v"]]
