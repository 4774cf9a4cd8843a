"""The decode path of numba_parallel: a few query rows per key/value head against many keys.

A task is one key/value head and one range of its keys (split-K, as flash-decoding does): it
takes every query row of the query heads that share the head, reads each key and value row
once, in place from the caller's k and v (C-contiguous: the module's `run` copies other
layouts into C order first), and keeps its range's online-softmax state; a second parallel
loop merges the ranges. The register tiles (decode_scores, decode_accumulate) come
from template.py like the tiled path's; the helpers they share are kernels.py's, whose digest
is in the tile argument's type, so a change there is a new signature here too.
"""

from __future__ import annotations

import numpy as np

from impls.numba_parallel.kernels import SOFTMAX_FLAGS, exp2, microkernel, numba, tile_sizes

if numba is not None:
    from numba import njit, prange
    from numba.extending import overload

    from impls.numba_parallel.kernels import aligned_empty, maxnum

# Keys per tile of the decode path: the tile's scores (32 rows x 64 at most) stay in L1, and
# the prefetch asks for the next tile; not tuned further.
DECODE_TILE_KEYS = 64
EMPTY_MAX = -1e30  # the running maximum of a key range with no keys: far below any score


def _decode_scores(q, keys, first_key, n_keys, s, ahead, tile):
    """s[:, :n_keys] = q @ keys[first_key:][:n_keys].T, k read in place, and the keys `ahead`
    rows on asked for (none for 0); by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


def _decode_accumulate(p, n_keys, values, first_key, out, rescale, ahead, tile):
    """out = rescale[:, None] * out + p[:, :n_keys] @ values[first_key:][:n_keys], v read in
    place, and the values `ahead` rows on asked for; by the overload below."""
    raise NotImplementedError("only callable from Numba-compiled code")


if numba is not None:

    @overload(_decode_scores)
    def _decode_scores_overload(q, keys, first_key, n_keys, s, ahead, tile):
        """Blocks of the tile's rows, then single rows; tile["keys"] keys at a time, then the
        last few keys one by one."""
        sizes = tile_sizes(tile)
        rows, step = sizes["rows"], sizes["keys"]
        block = microkernel("decode_scores", rows, step)
        single = microkernel("decode_scores", 1, step)

        def scores(q, keys, first_key, n_keys, s, ahead, tile):
            whole = n_keys - n_keys % step
            blocks = q.shape[0] - q.shape[0] % rows
            # (Loop indices, not a counter from 0: a literal 0 would compile each microkernel
            # twice, once for that constant.) The first row block asks for the keys `ahead` rows
            # on (0: none).
            for r in range(0, blocks, rows):
                block(q, r, keys, first_key, whole, s, ahead if r == 0 else 0)
            for r in range(blocks, q.shape[0]):
                single(q, r, keys, first_key, whole, s, ahead if r == 0 else 0)
            for j in range(whole, n_keys):
                key = keys[first_key + j]
                for r in range(q.shape[0]):
                    total = q.dtype.type(0)
                    for c in range(q.shape[1]):
                        total += q[r, c] * key[c]
                    s[r, j] = total

        return scores

    @overload(_decode_accumulate)
    def _decode_accumulate_overload(p, n_keys, values, first_key, out, rescale, ahead, tile):
        """Blocks of the tile's rows, then single rows, over whole strips of tile["columns"]
        columns; then the last few columns."""
        sizes = tile_sizes(tile)
        rows, width = sizes["rows"], sizes["columns"]
        block = microkernel("decode_accumulate", rows, width)
        single = microkernel("decode_accumulate", 1, width)

        def accumulate(p, n_keys, values, first_key, out, rescale, ahead, tile):
            blocks = out.shape[0] - out.shape[0] % rows
            for r in range(0, blocks, rows):
                block(p, r, n_keys, values, first_key, out, rescale, ahead if r == 0 else 0)
            for r in range(blocks, out.shape[0]):
                single(p, r, n_keys, values, first_key, out, rescale, ahead if r == 0 else 0)
            for r in range(out.shape[0]):
                for c in range(out.shape[1] - out.shape[1] % width, out.shape[1]):
                    total = out[r, c] * rescale[r]
                    for j in range(n_keys):
                        total += p[r, j] * values[first_key + j, c]
                    out[r, c] = total

        return accumulate

    @njit(fastmath=SOFTMAX_FLAGS, cache=True)
    def _decode_range(q, keys, values, head, k0, k1, q_factor, ahead, row_max, row_sum, acc, tile):
        """One decode task: query heads head, head + 1, ... (as many as row_max has rows, n_q
        each) against keys[k0:k1] and values[k0:k1], leaving the range's online-softmax state
        in row_max, row_sum and acc (its own function: Numba's parallel loop compiles its
        body once more, and a small body compiles faster)."""
        n_q, d_k = q.shape[1], q.shape[2]
        rows = row_max.shape[0]
        q_rows = aligned_empty(rows, d_k, q)
        for r in range(rows):
            for c in range(d_k):
                q_rows[r, c] = q[head + r // n_q, r % n_q, c] * q_factor
        row_max[:] = EMPTY_MAX  # an empty range (more splits than keys) weighs exp2(-huge) = 0
        row_sum[:] = 0
        acc[:, :] = 0
        p = aligned_empty(rows, DECODE_TILE_KEYS, q)
        rescale = np.empty(rows, q.dtype)
        for t0 in range(k0, k1, DECODE_TILE_KEYS):
            cols = min(DECODE_TILE_KEYS, k1 - t0)
            _decode_scores(q_rows, keys, t0, cols, p, ahead, tile)
            for r in range(rows):
                m = p[r, 0]
                for j in range(cols):
                    m = maxnum(m, p[r, j])
                m = maxnum(m, row_max[r])  # EMPTY_MAX before the first tile
                total = q.dtype.type(0)
                for j in range(cols):
                    e = exp2(p[r, j] - m)
                    p[r, j] = e
                    total += e
                alpha = exp2(row_max[r] - m)  # 0 before the first tile (nothing to rescale)
                row_sum[r] = row_sum[r] * alpha + total
                row_max[r] = m
                rescale[r] = alpha
            _decode_accumulate(p, cols, values, t0, acc, rescale, ahead, tile)

    @njit(parallel=True, fastmath=SOFTMAX_FLAGS, cache=True)
    def decode_kernel(q, k, v, q_factor, splits, ahead, part_max, part_sum, part_out, out, tile):
        """Few queries against many keys (decode), straight from the caller's k and v.

        A task is one key/value head and one of its `splits` key ranges (split-K, as
        flash-decoding does): it takes every query row of the query heads that share that head
        (group x n_q rows), so each key and value is read once, and keeps the online-softmax
        state of its range in part_max, part_sum, part_out. A second loop merges the ranges.
        Nothing is packed: at a few rows per key the time is the reading of k and v. The
        products are register tiles that read k and v in place (decode_scores,
        decode_accumulate); tile from tile_argument(rows=, keys=, columns=). With ahead > 0 the
        keys and values that many rows on are asked for from memory as it goes (0: none).
        """
        batch, n_q = q.shape[0], q.shape[1]
        kv_batch, n_k, d_v = v.shape
        group = batch // kv_batch
        rows = group * n_q
        per_split = (n_k + splits - 1) // splits
        for task in prange(kv_batch * splits):
            kv, split = task // splits, task % splits
            k0, k1 = split * per_split, min(n_k, (split + 1) * per_split)
            row_max, row_sum, acc = part_max[kv, split], part_sum[kv, split], part_out[kv, split]
            _decode_range(
                q, k[kv], v[kv], kv * group, k0, k1, q_factor, ahead, row_max, row_sum, acc, tile
            )
        for row in prange(kv_batch * rows):
            kv, r = row // rows, row % rows
            m = part_max[kv, 0, r]
            for split in range(1, splits):
                m = maxnum(m, part_max[kv, split, r])
            o = out[kv * group + r // n_q, r % n_q]
            o[:] = 0
            total = q.dtype.type(0)
            for split in range(splits):
                weight = exp2(part_max[kv, split, r] - m)
                total += part_sum[kv, split, r] * weight
                for c in range(d_v):
                    o[c] += part_out[kv, split, r, c] * weight
            for c in range(d_v):
                o[c] /= total
