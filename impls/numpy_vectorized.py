"""Vectorised NumPy over blocks of query rows, so the scores stay in the caches (L2/L3).

The textbook version (q @ k.T, softmax, @ v) builds the whole n_q x n_k score matrix and walks
it five times from memory; here each block of rows gets its scores, an in-place stable softmax
and its share of the output while the block is still in cache, so the extra memory is
O(block x n_k). NumPy's element-wise work (max, exp, sums) runs on one core, so the blocks are
shared among as many Python threads as BLAS has threads (NumPy releases the GIL in them), each
calling a single-threaded BLAS: the same cores, busy through the softmax too.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

NAME = "numpy"
DESCRIPTION = "vectorised NumPy, cache-sized row blocks, in-place stable softmax, BLAS matmuls"
DTYPES = ("float32", "float64")
CAUSAL = True
DEVICE = "cpu"
STYLE = ("#1f77b4", "o")  # colour and marker in every figure

# One block of scores per thread. 4 MiB overflows a 1 MiB L2, yet measured faster than 1 MiB
# at n = 2048-8192 (the 32-64-row products of 1 MiB blocks re-read k and v too often and run
# BLAS at small sizes; the figures: commit 30b0d07).
SCORE_BLOCK_BYTES = 4 << 20
MIN_ROWS = 16  # fewer rows per product and BLAS loses its efficiency
BLOCKS_PER_THREAD = 2  # at least, where n allows: causal blocks late in a head cost more
ONE_BLOCK_BYTES = 1 << 20  # scores up to this size: one block, no threads (their overhead,
# about 0.4 ms a call, was 8x the whole call at n = 64)


def unavailable_reason() -> str | None:
    return None


def block_rows(n_q: int, n_k: int, itemsize: int, threads: int, group: int = 1) -> int:
    """Query rows per block (of each of the `group` heads that share keys): enough for BLAS to be
    efficient, few enough to bound the memory and to give every thread BLOCKS_PER_THREAD blocks."""
    if group * n_q * n_k * itemsize <= ONE_BLOCK_BYTES:
        return n_q
    balanced = -(-n_q // (BLOCKS_PER_THREAD * threads))
    budget = SCORE_BLOCK_BYTES // (group * n_k * itemsize)
    return int(min(n_q, max(-(-MIN_ROWS // group), min(budget, balanced))))


@functools.cache
def _blas():
    """threadpoolctl's view of NumPy's BLAS, made once (scanning the libraries is slow)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController().select(user_api="blas")


@functools.cache
def _pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(threads, thread_name_prefix="attnbench-numpy")


@functools.lru_cache(maxsize=1)
def _workspace(caller: int, threads: int, rows: int, n_k: int, d_k: int, d_v: int, dtype: str):
    """Each thread's scratch, kept for the next call of the same shape from the same caller.

    Fresh 4 MiB score blocks cost a call their page faults every time (both threads faulting at
    once: 2-6 ms of a 10 ms call at n = 2048, d = 64), which a library that keeps its workspace,
    as torch's allocator does, never pays. `release_workspace` frees it.
    """
    return tuple(
        {
            "q_block": np.empty((rows, d_k), dtype),
            "scores": np.empty((rows, n_k), dtype),
            "row_sums": np.empty((rows, 1), dtype),
            "out_block": np.empty((rows, d_v), dtype),
        }
        for _ in range(threads)
    )


def release_workspace() -> None:
    """Free the kept scratch (the harness does, so that a call's memory counts it)."""
    _workspace.cache_clear()


def prepare(args):
    batch, n_q, d_k = args.q.shape
    kv_batch, n_k, d_v = args.v.shape
    group = args.group
    blas_threads = max((lib["num_threads"] for lib in _blas().info()), default=1)
    block = block_rows(n_q, n_k, args.dtype.itemsize, blas_threads, group)
    blocks = [(b, start) for b in range(kv_batch) for start in range(0, n_q, block)]
    threads = min(len(blocks), blas_threads)
    caller = threading.get_ident()  # concurrent callers never share scratch
    return {
        "args": args,
        "block": block,
        "threads": threads,
        # Thread t takes blocks t, t + threads, ...: causal blocks late in a head cost more.
        "shares": [blocks[t::threads] for t in range(threads)],
        "scratch": _workspace(caller, threads, group * block, n_k, d_k, d_v, args.dtype.str),
        # Above-diagonal entries of a block x block tile: the keys a causal row may not see.
        "future": np.triu(np.ones((block, block), dtype=bool), k=1),
        "out": np.empty((batch, n_q, d_v), args.dtype),
    }


def attend_blocks(state, share, scratch) -> None:
    """Each block: rows start..stop-1 of every query head that shares key/value head b, stacked
    into one product, so that k[b] and v[b] are read once for all of them (grouped-query
    attention and decode, where n_q is small, are bound by reading them)."""
    args, block = state["args"], state["block"]
    group, n_q, d_k = args.group, args.q.shape[1], args.q.shape[2]
    q = args.q.reshape(-1, group, n_q, d_k)  # (kv batch, group, n_q, d_k)
    out = state["out"].reshape(-1, group, n_q, state["out"].shape[2])
    k, v = args.k, args.v
    n_k = k.shape[1]
    for b, start in share:
        stop = min(start + block, n_q)
        rows = stop - start
        # Causal rows start..stop-1 see keys 0..stop-1 at most (top-left aligned).
        keys = min(n_k, stop) if args.causal else n_k
        q_block = scratch["q_block"][: group * rows]
        np.multiply(q[b, :, start:stop], args.scale, out=q_block.reshape(group, rows, d_k))
        s = np.matmul(q_block, k[b, :keys].T, out=scratch["scores"][: group * rows, :keys])
        if args.causal and start < keys:
            diagonal = s.reshape(group, rows, keys)[:, :, start:keys]  # a view
            diagonal[:, state["future"][:rows, : keys - start]] = -np.inf
        s -= s.max(axis=1, keepdims=True)
        np.exp(s, out=s)
        row_sums = np.sum(s, axis=1, keepdims=True, out=scratch["row_sums"][: group * rows])
        # The stacked rows' place in the output is one contiguous block with one head or all
        # its rows (decode): written in place; otherwise through scratch.
        in_place = group == 1 or rows == n_q
        if in_place:
            target = out[b, :, start:stop].reshape(group * rows, -1)  # a view: contiguous
        else:
            target = scratch["out_block"][: group * rows]
        o = np.matmul(s, v[b, :keys], out=target)
        np.divide(o, row_sums, out=o)
        if not in_place:
            out[b, :, start:stop] = o.reshape(group, rows, -1)


def run(state):
    if state["threads"] == 1:
        attend_blocks(state, state["shares"][0], state["scratch"][0])
        return
    with _blas().limit(limits=1):  # one BLAS thread per Python thread: no oversubscription
        done = _pool(state["threads"]).map(
            attend_blocks, [state] * state["threads"], state["shares"], state["scratch"]
        )
        list(done)  # re-raises a thread's exception here


def fetch(state):
    return state["out"]
