"""Kernel-specific tests of impls/numba_parallel/ (the generic conformance suite is elsewhere).

Shapes are picked around the kernel's own tile sizes, so every tail path runs: rows around the
microkernel height and the query block, keys around the key block, d_v around the strip width.
The kernel is compiled once per dtype (and cached on disk), so these tests cost little beyond
that compilation.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numba
import numpy as np
import pytest

import impls
from harness.worker import checking
from harness.worker.inputs import make_qkv
from impls import numba_parallel as kernel
from impls.numba_parallel import decode, dots, kernels, template

pytestmark = pytest.mark.skipif(
    kernel.unavailable_reason() is not None, reason=str(kernel.unavailable_reason())
)

REPO = Path(__file__).resolve().parents[1]
REPO_IS_X86 = platform.machine().lower() in ("x86_64", "amd64")
DTYPES = ("float32", "float64")
# Error allowed relative to max|v|: float32 accumulation over up to a few hundred keys.
TOLERANCE = {"float32": 2e-6, "float64": 1e-13}


def reference(q, k, v, causal, scale=None):
    """Float64 NumPy softmax(q k^T * scale) v; causal = torch's is_causal (top-left aligned)."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    scale = 1.0 / np.sqrt(q.shape[-1]) if scale is None else scale
    s = q @ np.swapaxes(k, -1, -2) * scale
    if causal:
        n_q, n_k = s.shape[-2:]
        s = np.where(np.arange(n_k)[None, :] <= np.arange(n_q)[:, None], s, -np.inf)
    s -= s.max(axis=-1, keepdims=True)
    p = np.exp(s)
    return (p / p.sum(axis=-1, keepdims=True)) @ v


def attention(q, k, v, causal=False, scale=None):
    return impls.get("numba_parallel").attention(q, k, v, causal=causal, scale=scale)


def random_inputs(rng, lead, n_q, n_k, d_k, d_v, dtype, magnitude=1.0):
    q = rng.standard_normal((*lead, n_q, d_k)) * magnitude
    k = rng.standard_normal((*lead, n_k, d_k)) * magnitude
    v = rng.standard_normal((*lead, n_k, d_v))
    return q.astype(dtype), k.astype(dtype), v.astype(dtype)


def assert_matches(q, k, v, causal, scale=None):
    out = attention(q, k, v, causal=causal, scale=scale)
    expected = reference(q, k, v, causal, scale)
    assert out.shape == expected.shape
    assert out.dtype == q.dtype
    assert np.isfinite(out).all()
    error = np.abs(out - expected).max() / np.abs(v).max()
    assert error < TOLERANCE[q.dtype.name], error


def around(size):
    return sorted({max(1, size - 1), size, size + 1})


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_tails_around_every_tile_size(dtype, causal):
    """Query rows around the tile's and the query block, keys around the key block."""
    rng = np.random.default_rng(1)
    sizes = {1, *around(kernel.tile(dtype)[0]), *around(kernel.BLOCK_QUERIES[dtype])}
    sizes |= {*around(kernels.BLOCK_KEYS), *around(2 * kernels.BLOCK_KEYS)}
    for n in sorted(sizes):
        assert_matches(*random_inputs(rng, (2,), n, n, 7, 9, dtype), causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_feature_dims_around_the_strip_width(dtype):
    rng = np.random.default_rng(2)
    strip = kernel.tile(dtype)[1]
    dims = [(1, 1), (3, strip - 1), (strip, strip), (strip + 1, strip + 1), (80, 2 * strip + 3)]
    for d_k, d_v in dims:
        for causal in (False, True):
            assert_matches(*random_inputs(rng, (), 37, 37, d_k, d_v, dtype), causal)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("n_q", "n_k"), [(1, 200), (200, 1), (70, 130), (130, 70), (5, 65)])
def test_causal_and_plain_with_unequal_lengths(dtype, n_q, n_k):
    rng = np.random.default_rng(3)
    for causal in (False, True):
        assert_matches(*random_inputs(rng, (2, 3), n_q, n_k, 16, 24, dtype), causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_large_scores_stay_finite_and_correct(dtype):
    """Scores of order 1e6: the online softmax must neither overflow nor give NaN."""
    rng = np.random.default_rng(4)
    for causal in (False, True):
        assert_matches(*random_inputs(rng, (), 150, 150, 8, 8, dtype, magnitude=1e3), causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_explicit_scale_and_non_contiguous_inputs(dtype):
    rng = np.random.default_rng(5)
    base = rng.standard_normal((70, 2, 3, 32)).astype(dtype)
    q = base.transpose(1, 2, 0, 3)  # (2, 3, 70, 32), a strided view
    assert not q.flags.c_contiguous
    assert_matches(q, q, q[..., :20], causal=True, scale=0.3)


def test_query_blocks_are_large_for_long_sequences_and_keep_every_thread_busy():
    def blocks(dtype, batch, n, threads, causal=False):
        return kernel.query_blocks(dtype, batch, n, threads, causal)

    assert blocks("float32", 1, 8192, 2) == 32  # 256 rows
    assert blocks("float32", 1, 2048, 2) == 16  # 128 rows: 16 tasks for 2 threads
    assert blocks("float32", 1, 256, 2) == 4  # never under 64 rows
    assert blocks("float64", 1, 256, 2) == 8  # float64: 32
    assert blocks("float32", 32, 1024, 2) == 4  # batch x heads count too: 256 rows
    assert blocks("float32", 1, 8192, 16) == 128  # 64 rows: 8 tasks for each of 16 threads
    # the causal mask: a block's diagonal band (rows / n of the work) computed in full
    assert blocks("float32", 1, 8192, 2, causal=True) == 32  # 256 rows: 1/32 more
    assert blocks("float32", 1, 4096, 2, causal=True) == 32  # 128 rows, not 256 (1/16 more)
    assert blocks("float32", 32, 512, 2, causal=True) == 8  # 64 rows, not 256 (1/2 more)
    assert blocks("float64", 32, 512, 2, causal=True) == 16  # 32 rows


def test_every_thread_gets_as_many_query_blocks():
    """17 blocks for 2 threads would leave one thread a block more (6% of the time at n = 4096
    with 240-row blocks): the count is rounded up to a multiple of the threads instead."""
    assert kernel.query_blocks("float32", 1, 4097, 2, False) == 18  # 17 blocks of 256, even
    assert kernel.query_blocks("float32", 3, 1100, 2, False) == 10  # 30 tasks, not 27
    assert kernel.query_blocks("float32", 2, 1100, 2, False) == 9  # 18 tasks already
    assert kernel.query_blocks("float32", 1, 300, 4, True) == 8  # 5 blocks of 64, then 8
    rows = kernel.tile("float32")[0]
    assert kernel.query_blocks("float32", 1, rows + 1, 2, False) == 2  # a tile of rows at least
    assert kernel.query_blocks("float32", 1, rows - 1, 2, False) == 1


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True])
def test_tails_with_the_largest_query_blocks(dtype, causal, monkeypatch):
    def fewest_blocks(dtype, batch, n_q, threads, causal):
        return -(-n_q // kernel.MAX_BLOCK_QUERIES)  # blocks of up to the largest size

    monkeypatch.setattr(kernel, "query_blocks", fewest_blocks)
    rng = np.random.default_rng(8)
    for n in (*around(kernel.MAX_BLOCK_QUERIES), 2 * kernel.MAX_BLOCK_QUERIES + 5):
        assert_matches(*random_inputs(rng, (2,), n, n, 7, 9, dtype), causal)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("blocks", [2, 3, 7, 9])
def test_any_block_count_up_to_one_per_microkernel_rows(dtype, blocks, monkeypatch):
    """9 tiles of rows and a tail: 2, 3 and 7 blocks do not divide them, 9 is one tile each."""
    monkeypatch.setattr(kernel, "query_blocks", lambda *args: blocks)
    rng = np.random.default_rng(9)
    n = 8 * kernel.tile(dtype)[0] + 3
    for causal in (False, True):
        assert_matches(*random_inputs(rng, (2,), n, n, 7, 9, dtype), causal)


def test_query_block_larger_than_key_block(monkeypatch):
    """The block count is a runtime argument: with one block larger than the key block, some
    rows of a causal block see no key of a tile, the path that must keep their running state."""
    monkeypatch.setattr(kernel, "query_blocks", lambda *args: 1)
    rng = np.random.default_rng(6)
    assert_matches(*random_inputs(rng, (), 300, 300, 16, 16, "float32"), causal=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("magnitude", [1.0, 1e3])
def test_full_tile_fast_path_matches_the_general_softmax_step(dtype, first, magnitude):
    """The fixed-length softmax path for unmasked full tiles does what the general one does."""
    rng = np.random.default_rng(7)
    rows = 2 * kernel.tile(dtype)[0]
    scores = (rng.standard_normal((rows, kernels.BLOCK_KEYS)) * magnitude).astype(dtype)
    state = [(rng.standard_normal(rows) * magnitude).astype(dtype) for _ in range(2)]
    state[1] = np.abs(state[1]) + 1  # a running row sum is positive
    results = []
    for step, args in (
        (kernels.softmax_tile, (rows, kernels.BLOCK_KEYS, False, 1, first)),
        (kernels.softmax_full_tile, (rows, first)),
    ):
        tile, row_max, row_sum = scores.copy(), state[0].copy(), state[1].copy()
        rescale = np.empty(rows, dtype)
        step(tile, *args, row_max, row_sum, rescale)
        results.append((tile, row_max, row_sum, rescale))
    rtol = {"float32": 1e-5, "float64": 1e-12}[dtype]
    for general, fast in zip(*results, strict=True):
        assert np.isfinite(fast).all()
        np.testing.assert_allclose(fast, general, rtol=rtol, atol=0)


def test_slp_setting_is_restored():
    import numba

    before = numba.config.SLP_VECTORIZE
    q = np.ones((1, 4, 4), np.float32)
    attention(q, q, q)
    assert before == numba.config.SLP_VECTORIZE


class CountingCalls:
    """Stands in for a compiled function: counts the calls, passes everything else through."""

    def __init__(self, compiled):
        self.compiled, self.calls = compiled, []

    def __call__(self, *args):
        self.calls.append(args)
        return self.compiled(*args)

    def __getattr__(self, name):
        return getattr(self.compiled, name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n_q, module, function", [(300, kernels, "attention_kernel"), (1, decode, "decode_kernel")]
)
def test_attention_runs_the_kernel_once_and_prepare_never(
    dtype, n_q, module, function, monkeypatch
):
    """A public call computes once: prepare compiles by signature, it does not run the case."""
    counting = CountingCalls(getattr(module, function))
    monkeypatch.setattr(module, function, counting)
    monkeypatch.setattr(kernel, "_COMPILED", set())  # compile (or load) again, by signature
    q, k, v = make_qkv(n_q, 300, 16, dtype=dtype, seed=4)
    call = impls.get("numba_parallel").prepare(q, k, v)
    assert counting.calls == []
    call.run()
    assert len(counting.calls) == 1
    impls.get("numba_parallel").attention(q, k, v)
    assert len(counting.calls) == 2


def run_python(code: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n_q, function", [(40, "kernels.attention_kernel"), (1, "decode.decode_kernel")]
)
def test_second_process_loads_the_kernel_from_the_disk_cache(dtype, n_q, function):
    q = np.ones((1, n_q, 4), dtype)
    attention(q, q, q)  # compiled (or loaded) here, so the cache holds it now
    report = run_python(
        f"""
        import json, numpy as np, impls
        from impls.numba_parallel import decode, kernels
        q = np.ones((1, {n_q}, 4), "{dtype}")
        impls.get("numba_parallel").attention(q, q, q)
        print(json.dumps({{
            "hits": sum({function}._cache_hits.values()),
            "misses": sum({function}._cache_misses.values()),
        }}))
        """
    )
    assert report == {"hits": 1, "misses": 0}


def test_calls_of_one_shape_share_their_packed_buffers_in_the_thread_that_runs_them():
    """The packed q, k and v are kept for the running thread's next call of the same shapes
    (fresh ones cost every call their page faults). Two calls prepared before either runs still
    each get their own result, since a run packs its own inputs first; another thread runs on
    other buffers; release_workspace lets them go."""
    impl = impls.get("numba_parallel")
    rng = np.random.default_rng(7)
    first = random_inputs(rng, (2,), 70, 90, 24, 20, "float32")
    second = random_inputs(rng, (2,), 70, 90, 24, 20, "float32")
    call_a, call_b = impl.prepare(*first), impl.prepare(*second, causal=True)
    kept = kernel._running_buffers(call_a.state)
    assert all(x is y for x, y in zip(kept, kernel._running_buffers(call_b.state), strict=True))
    call_b.run()
    call_a.run()  # packs into the buffers b computed from
    out_a, out_b = call_a.fetch(), call_b.fetch()
    for inputs, out, causal in ((first, out_a, False), (second, out_b, True)):
        error = np.abs(out - reference(*inputs, causal)).max() / np.abs(inputs[2]).max()
        assert error < TOLERANCE["float32"], error
    elsewhere = []
    thread = threading.Thread(
        target=lambda: elsewhere.extend(kernel._running_buffers(call_a.state))
    )
    thread.start()
    thread.join()
    assert not any(x is y for x, y in zip(kept, elsewhere, strict=True))
    kept = kernel._running_buffers(call_a.state)
    assert kernel._running_buffers(call_b.state)[0] is kept[0]  # kept for the next call
    impl.release_workspace()
    assert not any(x is y for x, y in zip(kept, kernel._running_buffers(call_a.state), strict=True))


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_buffer_read_as_vectors_starts_on_a_cache_line(dtype):
    """The packed q, k and v, the output, and each score tile a kernel allocates start on
    kernels.ALIGNMENT (NumPy's allocator gives 16 bytes, Numba's 32), whatever the shapes; a
    tile has the shape asked for and holds what is written to it."""
    rng = np.random.default_rng(3)
    call = impls.get("numba_parallel").prepare(*random_inputs(rng, (2,), 70, 90, 24, 20, dtype))
    arrays = [*kernel._running_buffers(call.state), call.state["out"]]
    for shape in ((1,), (3, 5), (2, 7, 9)):
        zeros = kernels.aligned_zeros(shape, dtype)
        assert zeros.shape == shape and zeros.dtype == dtype and not zeros.any()
        arrays.append(zeros)
    assert [a.ctypes.data % kernels.ALIGNMENT for a in arrays] == [0] * len(arrays)

    @numba.njit
    def tiles(like, columns):  # the allocator's offsets vary from one allocation to the next
        found = np.empty((8, 4), np.int64)  # address, rows, columns, sum of the values
        for rows in range(1, 9):
            tile = kernels.aligned_empty(rows, columns, like)
            tile[:, :] = rows
            found[rows - 1, 0] = tile.ctypes.data
            found[rows - 1, 1:] = (tile.shape[0], tile.shape[1], int(tile.sum()))
        return found

    found = tiles(np.zeros(1, dtype), 5)
    assert (found[:, 0] % kernels.ALIGNMENT == 0).all()
    rows = np.arange(1, 9)
    assert (found[:, 1] == rows).all() and (found[:, 2] == 5).all()
    assert (found[:, 3] == rows * 5 * rows).all()


def test_no_score_matrix_is_allocated():
    """Peak RSS while running n = 8192 grows by far less than one n x n float32 matrix (256 MiB)."""
    report = run_python(
        """
        import json, numpy as np, impls
        from harness.worker.memory import peak_extra_bytes
        impl = impls.get("numba_parallel")
        small = np.ones((1, 8, 8), np.float32)
        impl.attention(small, small, small)  # compile or load first: not part of the measure
        rng = np.random.default_rng(0)
        q = rng.standard_normal((1, 8192, 16)).astype(np.float32)
        extra = peak_extra_bytes(lambda: impl.attention(q, q, q))  # resettable high-water mark
        print(json.dumps({"growth_kib": extra // 1024}))
        """
    )
    assert report["growth_kib"] < 64 * 1024


# --- decode: a few query rows per key/value head, key ranges split across tasks --------------


@pytest.mark.parametrize(
    "dtype, clamp, tolerance", [("float32", -127, 2e-7), ("float64", -1023, 1e-15)]
)
def test_exp2_is_accurate_and_exactly_zero_below_its_clamp(dtype, clamp, tolerance):
    """The softmax's exp2, compiled as the kernels compile it (fast-math with `reassoc`, SLP on,
    so that it vectorises): within a few units in the last place of 2^x where 2^x is normal
    (the polynomial's fit is 2.6e-9 / 1e-16 relative, the rest is the rounding of its steps),
    exactly 0 at and below the clamp, never NaN or inf however negative x is; and integers
    give exact powers of two (the rounding by a shift must not be folded away)."""
    with kernels.slp_vectorizer_on():

        @numba.njit(fastmath=kernels.SOFTMAX_FLAGS)
        def exp2_all(x, out):
            for i in range(x.shape[0]):
                out[i] = kernels.exp2(x[i])

        x = np.concatenate(
            [np.linspace(clamp - 10, 0, 200_001), -np.logspace(-8, 3, 1000), [-1e30, -np.inf]]
        ).astype(dtype)
        out = np.empty_like(x)
        exp2_all(x, out)
    exact = np.exp2(x.astype(np.float64))
    normal = exact >= 2 * np.finfo(dtype).tiny
    assert np.abs(out[normal] / exact[normal] - 1).max() < tolerance
    assert (out[x <= clamp] == 0).all() and np.isfinite(out).all()
    integers = np.arange(clamp + 2, 1).astype(dtype)
    exp2_all(integers, out[: integers.size])
    assert (out[: integers.size] == np.exp2(integers)).all()


def test_decode_path_is_for_a_few_unmasked_rows_per_key_value_head():
    assert kernel.uses_decode(n_q=1, group=4, causal=False)
    assert kernel.uses_decode(n_q=kernel.DECODE_MAX_ROWS, group=1, causal=False)
    assert not kernel.uses_decode(n_q=kernel.DECODE_MAX_ROWS, group=2, causal=False)
    assert not kernel.uses_decode(n_q=1, group=4, causal=True)  # a few rows see a few keys


def test_decode_splits_keep_every_thread_busy_with_ranges_worth_merging():
    assert kernel.decode_splits(kv_batch=8, n_k=32768, threads=2) == 2  # 16 tasks
    assert kernel.decode_splits(kv_batch=1, n_k=32768, threads=2) == 16
    assert kernel.decode_splits(kv_batch=1, n_k=600, threads=2) == 2  # ranges of 256 keys at least
    assert kernel.decode_splits(kv_batch=1, n_k=100, threads=4) == 1
    assert kernel.decode_splits(kv_batch=64, n_k=32768, threads=2) == 1


@pytest.mark.parametrize("faster", [0, decode.DECODE_TILE_KEYS])
def test_decode_asks_ahead_as_the_first_call_of_a_size_measured_faster(faster, monkeypatch):
    """Each size class is timed once (no prefetch against a tile ahead, on scratch inputs, not
    the caller's), and the faster kept for the calls after it; small k and v are never timed,
    nor large ones (a tile ahead: no scratch copy of a large KV cache)."""
    timed = []

    def decode_kernel(q, k, v, q_factor, splits, ahead, *rest):
        assert (k == 0.5).all() and (v == 0.5).all()  # the scratch inputs
        timed.append(ahead)
        time.sleep(0.004 if ahead == faster else 0.008)  # one call a batch

    monkeypatch.setattr(kernel, "_AHEAD", {})
    monkeypatch.setattr(kernel, "AHEAD_MIN_BYTES", 32 << 10)  # k and v: 16 KiB, 64 KiB
    rng = np.random.default_rng(0)
    q, _, _ = random_inputs(rng, (8,), 1, 1, 16, 16, "float32")
    small, large = (random_inputs(rng, (2,), 1, n_k, 16, 16, "float32")[1] for n_k in (64, 256))
    impls.get("numba_parallel").prepare(q, small, small)  # compiled before the fake goes in
    monkeypatch.setattr(decode, "decode_kernel", decode_kernel)
    assert impls.get("numba_parallel").prepare(q, small, small).state["ahead"] == 0
    assert timed == []
    first = impls.get("numba_parallel").prepare(q, large, large)
    assert first.state["ahead"] == faster
    pairs = kernel.AHEAD_WARM_PAIRS + kernel.AHEAD_PAIRS
    assert timed.count(0) == 1 + pairs and timed.count(decode.DECODE_TILE_KEYS) == pairs
    assert impls.get("numba_parallel").prepare(q, large + 1, large).state["ahead"] == faster
    assert len(timed) == 1 + 2 * pairs  # the size's choice is kept
    monkeypatch.setattr(kernel, "AHEAD_MAX_BYTES", 64 << 10)
    huge = random_inputs(rng, (2,), 1, 512, 16, 16, "float32")[1]  # k and v: 128 KiB
    call = impls.get("numba_parallel").prepare(q, huge, huge)
    assert call.state["ahead"] == decode.DECODE_TILE_KEYS
    assert len(timed) == 1 + 2 * pairs


@pytest.mark.parametrize("ahead", [0, decode.DECODE_TILE_KEYS])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "n_q, n_k, group, splits",
    [
        (1, 9, 4, 4),  # ranges of 3, 3, 3 and an empty one
        (1, 200, 1, 3),  # ranges across decode tiles (64 keys) with tails
        (3, 130, 2, 2),  # several queries per head, d_v != d_k below
        (1, 1, 8, 1),
        (2, 700, 8, 7),
    ],
)
def test_decode_key_ranges_merge_to_the_reference(
    dtype, n_q, n_k, group, splits, ahead, monkeypatch
):
    """Scores x 30: each range's maximum is far from the others', which the merge must rescale;
    with the keys and values ahead asked for or not."""
    monkeypatch.setattr(kernel, "decode_splits", lambda *args: splits)
    monkeypatch.setattr(kernel, "decode_ahead", lambda state: ahead)
    rng = np.random.default_rng(n_k + splits)
    q, _, _ = random_inputs(rng, (2 * group,), n_q, 1, 16, 16, dtype, magnitude=30.0)
    _, k, v = random_inputs(rng, (2,), 1, n_k, 16, 12, dtype, magnitude=30.0)
    call = impls.get("numba_parallel").prepare(q, k, v)
    assert call.state["path"] == "decode" and call.state["splits"] == splits
    assert call.state["ahead"] == ahead
    call.run()
    agreement = checking.compare(call.fetch(), call.args)  # tolerance grows with the scores
    assert agreement.ok, (agreement.max_rel_err, agreement.tolerance, agreement.problem)


@pytest.mark.parametrize("layout", ["strided", "fortran"])
def test_decode_copies_other_layouts_into_c_order_for_its_register_tiles(layout):
    """The decode path reads C-contiguous k and v in place; any other layout (a cache stored
    sequence-major and seen head-major, say) is copied into C order in `run`, each call again,
    so the one compiled kernel with the register tiles serves every layout."""
    rng = np.random.default_rng(5)
    q, k, v = random_inputs(rng, (4,), 2, 300, 16, 16, "float32")
    if layout == "strided":
        q2, k2, v2 = (np.repeat(x, 2, axis=-2)[..., ::2, :] for x in (q, k, v))
    else:
        q2, k2, v2 = (np.asfortranarray(x) for x in (q, k, v))
    call = impls.get("numba_parallel").prepare(q2, k2, v2)
    assert call.state["path"] == "decode" and not k2.flags.c_contiguous
    assert call.state["decode_tile"] == kernel.decode_tile("float32")
    call.run()
    assert checking.compare(call.fetch(), call.args).ok
    assert np.shares_memory(call.args.k, k2)
    k2[...], v2[...] = v2.copy(), k2.copy()  # new values in the caller's arrays: copied again
    call.run()
    assert checking.compare(call.fetch(), call.args).ok


def test_decode_of_c_contiguous_inputs_copies_nothing():
    """k and v in C order are read where they are: no buffer of their size is kept."""
    rng = np.random.default_rng(6)
    q, k, v = random_inputs(rng, (4,), 2, 300, 16, 16, "float32")
    kernel.release_workspace()
    call = impls.get("numba_parallel").prepare(q, k, v)
    call.run()
    assert kernel._packed_buffers.cache_info().currsize == 0


# --- register tiles per instruction set, generated from one template --------------------------


@pytest.mark.parametrize("shape", [(1, 1), (3, 4), "avx2"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_generated_microkernels_compute_their_products(shape, dtype):
    """Any tile shape the template is given (odd ones, and the shape of the dtype's AVX2 tile,
    which an AVX-512 host runs nowhere else): the scores and the rescaled accumulation.

    Sums of 7-9 products of standard normal values, accumulated in the dtype: the error is
    within a few units of roundoff times the sum of the terms' magnitudes (about 10)."""
    rows, columns = kernel.TILES[256][dtype] if shape == "avx2" else shape
    atol = 100 * np.finfo(dtype).eps
    rng = np.random.default_rng(rows * columns)
    q = rng.standard_normal((2 * rows, 7)).astype(dtype)
    k_strips = rng.standard_normal((3, 7, columns)).astype(dtype)  # k^T in 3 strips
    scores = np.zeros((2 * rows, 3 * columns), dtype)
    with kernels.slp_vectorizer_on():
        kernels.microkernel("scores", rows, columns)(q, k_strips, 2, scores)
    expected = q.astype(float) @ np.concatenate(list(k_strips[:2]), axis=1)
    np.testing.assert_allclose(scores[:, : 2 * columns], expected, rtol=0, atol=atol)
    assert not scores[:, 2 * columns :].any()  # n_strips = 2: the third strip left alone

    p = rng.random((2 * rows, 11)).astype(dtype)
    v_strips = rng.standard_normal((2, 11, columns)).astype(dtype)  # d_v in 2 strips
    out = rng.standard_normal((2 * rows, 2 * columns)).astype(dtype)
    rescale = rng.random(2 * rows).astype(dtype)
    expected = rescale[:, None] * out + p[:, :9] @ np.concatenate(list(v_strips[:, :9]), axis=1)
    with kernels.slp_vectorizer_on():
        kernels.microkernel("accumulate", rows, columns)(p, 9, v_strips, out, rescale)
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)


@pytest.mark.parametrize("rows, keys, columns", [(1, 1, 1), (3, 2, 8), (4, 4, 8)])
@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_microkernels_compute_their_products_from_k_and_v_in_place(
    rows, keys, columns, dtype
):
    """The decode path's tiles read the caller's row-major k and v: rows r..r + rows of the
    scores against keys first_key.. (a multiple of `keys` of them), and of the rescaled
    accumulation over whole strips of `columns` (the columns past the last strip are the
    caller's). Asking for the keys and values ahead (up to past the last) changes no number.
    d = 40 is no whole number of vectors: the dot products' last vector is a partial one.
    Tolerance as above: sums of up to 40 products of standard normal values."""
    atol = 100 * np.finfo(dtype).eps
    rng = np.random.default_rng(rows * keys * columns)
    d, n_keys, first, r = 40, 4 * keys, 3, 1
    q = rng.standard_normal((rows + 2, d)).astype(dtype)
    k = rng.standard_normal((first + n_keys + 1, d)).astype(dtype)
    v = rng.standard_normal((first + n_keys + 1, 2 * columns + 1)).astype(dtype)
    scores = np.zeros((rows + 2, n_keys + 1), dtype)
    with kernels.slp_vectorizer_on():
        kernels.microkernel("decode_scores", rows, keys)(q, r, k, first, n_keys, scores, 3)
    expected = q[r : r + rows].astype(float) @ k[first : first + n_keys].T.astype(float)
    np.testing.assert_allclose(scores[r : r + rows, :n_keys], expected, rtol=0, atol=atol)
    scores[r : r + rows, :n_keys] = 0
    assert not scores.any()  # nothing outside the rows and keys asked for

    p = rng.random((rows + 2, n_keys)).astype(dtype)
    out = rng.standard_normal((rows + 2, 2 * columns + 1)).astype(dtype)
    rescale = rng.random(rows + 2).astype(dtype)
    expected = out.astype(float)
    block, whole = slice(r, r + rows), slice(0, out.shape[1] - out.shape[1] % columns)
    product = rescale[block, None] * out[block] + p[block] @ v[first : first + n_keys]
    expected[block, whole] = product[:, whole]  # columns past the last whole strip: left alone
    with kernels.slp_vectorizer_on():
        kernels.microkernel("decode_accumulate", rows, columns)(
            p, r, n_keys, v, first, out, rescale, 3
        )
    np.testing.assert_allclose(out, expected, rtol=0, atol=atol)


def test_the_template_writes_one_product_per_row_and_column_carried_in_one_tuple():
    source = template.microkernel_source("scores", 2, 3)
    step = "a0_0 + x0 * k0, a0_1 + x0 * k1, a0_2 + x0 * k2, a1_0 + x1 * k0, a1_1 + x1 * k1"
    assert f"step = ({step}, a1_2 + x1 * k2,)" in source
    assert "a0_0, a0_1, a0_2, a1_0, a1_1, a1_2, = acc" in source
    assert "k2 = k[2]" in source and "k3" not in source and "a2_0" not in source
    # acc is assigned before the loop and by each step; no accumulator by itself, which would
    # make Numba's compile time grow with the square of the tile
    assert source.count("acc = ") == 2 and "a0_0 = " not in source and "+=" not in source
    dot_products = template.microkernel_source("decode_scores", 2, 3)
    call = "_dot_products(q, r, keys, first_key + key, s, key, ahead)"
    assert dot_products.count(call) == 1 and "key in range(0, n_keys, 3)" in dot_products
    accumulation = template.microkernel_source("decode_accumulate", 2, 3)
    assert accumulation.count("_prefetch_columns(values, first_key + c + ahead, col)") == 1


@pytest.mark.parametrize(
    "cpu, bits",
    [("haswell", 256), ("znver3", 256), ("skylake-avx512", 512), ("sapphirerapids", 512),
     ("znver4", 512), ("x86-64", 128)],
)  # fmt: skip
def test_the_tile_follows_the_vectors_of_the_target_numba_compiles_for(cpu, bits, monkeypatch):
    if not REPO_IS_X86:
        pytest.skip("x86 target names")
    monkeypatch.setattr(kernels.numba.config, "CPU_NAME", cpu)
    monkeypatch.setattr(kernels.numba.config, "CPU_FEATURES", "")
    assert kernel.vector_bits.__wrapped__() == bits


def test_every_tile_fits_the_key_block():
    for tiles in kernel.TILES.values():
        for rows, columns in tiles.values():
            assert kernels.BLOCK_KEYS % columns == 0 and rows >= 1


ASSEMBLY_REPORT = """
import json, re
from numba import types
from impls.numba_parallel import kernels, vector_bits

def reduction_loop(assembly):
    \"\"\"Of the innermost loops (a label and a jump back to it, holding no other loop), the
    one with the most FMAs: the tile's reduction.\"\"\"
    lines = assembly.splitlines()
    labels = {m[1]: i for i, line in enumerate(lines) if (m := re.match(r"(\\.LBB\\w+):", line))}
    spans = [(labels[m[1]], j) for j, line in enumerate(lines)
             if (m := re.match(r"\\s+j\\w+\\s+(\\.LBB\\w+)", line)) and labels.get(m[1], j) < j]
    innermost = [(a, b) for a, b in spans
                 if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in spans)]
    loops = [lines[a : b + 1] for a, b in innermost]
    return max(loops, key=lambda body: sum("vfmadd" in line for line in body))

report = {"bits": vector_bits()}
i = types.int64
with kernels.slp_vectorizer_on():
    for dtype, (rows, columns) in TILES.items():
        dt = getattr(types, dtype)
        a1, a2, a3 = (types.Array(dt, ndim, "C") for ndim in (1, 2, 3))
        kernels_of_dtype = [("scores", rows, columns, (a2, a3, i, a2)),
                            ("accumulate", rows, columns, (a2, i, a3, a2, a1))]
        if dtype in DECODE_TILES:
            decode_rows, decode_keys, decode_columns = DECODE_TILES[dtype]
            kernels_of_dtype += [
                ("decode_scores", decode_rows, decode_keys, (a2, i, a2, i, i, a2, i)),
                ("decode_accumulate", decode_rows, decode_columns, (a2, i, i, a2, i, a2, a1, i)),
            ]
        for kind, rows, columns, signature in kernels_of_dtype:
            function = kernels.microkernel(kind, rows, columns)
            function.compile(signature)
            loop = reduction_loop(function.inspect_asm(signature))
            report[f"{dtype} {kind} {rows}x{columns}"] = {
                "fma": sum("vfmadd" in line for line in loop),
                "registers": sorted({r for line in loop for r in re.findall(r"%([xyz])mm", line)}),
                "vector_spills": sum("(%rsp)" in line and "mm" in line for line in loop),
            }
print(json.dumps(report))
"""


def assembly_report(cpu: str, tiles: dict, decode_tiles: dict | None = None) -> dict:
    """Compile the microkernels of these tiles ({dtype: (rows, columns)}, and of the decode
    tiles given, {dtype: (rows, keys, columns)}) for a target named like NUMBA_CPU_NAME (with
    that CPU's own features, so it runs on any x86 host) and describe each one's reduction
    loop."""
    script = f"TILES = {tiles!r}\nDECODE_TILES = {decode_tiles or {}!r}\n" + ASSEMBLY_REPORT
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NUMBA_CPU_NAME": cpu, "NUMBA_CPU_FEATURES": ""},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "cpu, bits, register", [("haswell", 256, "y"), ("sapphirerapids", 512, "z")]
)
def test_microkernels_use_the_full_vector_width_and_never_spill_in_their_loop(cpu, bits, register):
    """AVX2 (haswell) and AVX-512 (an Intel server core, where LLVM would prefer 256 bits but
    for the kernels' own attribute): every FMA of the loop on full-width registers, one per
    accumulator vector, and no vector register stored to or loaded from the stack. Decode's
    scores hold one vector per (row, key) dot product, reduced along d (a whole number of
    steps of them: LLVM may unroll that loop)."""
    if not REPO_IS_X86:
        pytest.skip("x86 target names")
    report = assembly_report(cpu, kernel.TILES[bits], kernel.DECODE_TILES[bits])
    assert report.pop("bits") == bits
    for name, loop in report.items():
        dtype, kind, shape = name.split()
        rows, columns = map(int, shape.split("x"))
        lanes = bits // (8 * np.dtype(dtype).itemsize)
        vectors = rows * columns if kind == "decode_scores" else rows * columns // lanes
        if kind == "decode_scores":  # dots.py's own loop, which LLVM may unroll: k steps
            steps, left = divmod(loop.pop("fma"), vectors)
            assert steps >= 1 and left == 0, name
            loop["fma"] = vectors
        assert loop == {"fma": vectors, "registers": [register], "vector_spills": 0}, name


def test_the_spill_check_sees_a_tile_too_large_for_the_registers():
    """6 rows of two ymm vectors need 19 registers where AVX2 has 16: the check must say so."""
    if not REPO_IS_X86:
        pytest.skip("x86 target names")
    report = assembly_report("haswell", {"float32": (6, 16)})
    assert report["float32 scores 6x16"]["vector_spills"] > 0


def test_an_avx2_target_runs_its_own_tile_correctly_on_any_x86_host():
    """Held to AVX2 (NUMBA_CPU_NAME=haswell with its own features; the name alone keeps the
    host's), the kernel takes the AVX2 tile, compiled and cached apart from the host's."""
    if not REPO_IS_X86:
        pytest.skip("x86 target names")
    code = textwrap.dedent(
        """
        import json, numpy as np, impls
        from harness.worker import checking
        q, k, v = (np.random.default_rng(i).standard_normal((2, 300, 24)) for i in range(3))
        call = impls.get("numba_parallel").prepare(q, k, v, causal=True)
        call.run()
        ok = checking.compare(call.fetch(), call.args).ok
        print(json.dumps({"variant": call.variant(), "ok": ok}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": ""},
    )
    report = json.loads(result.stdout.strip().splitlines()[-1])
    rows, columns = kernel.TILES[256]["float64"]
    assert report == {"variant": f"tiled {rows}x{columns}, 256-bit vectors", "ok": True}


def test_the_tile_type_names_the_source_the_kernels_compile_from():
    """Numba's disk cache checks a kernel's own file only; decode.py's kernels compile
    kernels.py's helpers and both compile template.py's microkernels, which compile dots.py's
    dot products: a digest of the three is part of every kernel's signature, through the tile
    argument's type."""
    modules = (kernels, template, dots)
    source = b"".join(Path(module.__file__).read_bytes() for module in modules)
    digest = hashlib.sha256(source).hexdigest()[:12]
    tile = kernels.tile_argument(rows=4, columns=16)
    assert tile.dtype.names == ("rows", "columns", f"source_{digest}")
    assert kernels.tile_sizes(kernels.numba.typeof(tile)) == {"rows": 4, "columns": 16}
