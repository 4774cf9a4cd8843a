"""Every registered implementation computes softmax(q k^T * scale) v, for every shape and dtype.

Parametrised over the registry: a new file in impls/ is tested here without editing this file.
Outputs are compared with harness.worker.checking's float64 reference under its dtype-and-size
tolerance (see harness/worker/checking.py for how it is derived).
"""

import dataclasses

import numpy as np
import pytest
from conftest import simulator_limit_or_skip

import impls
from harness.worker import checking
from harness.worker.inputs import make_qkv

# (n_q, n_k, d_k, d_v, leading dims)
SHAPES = [
    (1, 1, 5, 5, ()),
    (7, 7, 3, 3, ()),
    (33, 33, 7, 7, ()),
    (127, 127, 16, 16, ()),
    (128, 128, 33, 33, ()),
    (129, 129, 64, 64, ()),
    (17, 40, 8, 5, ()),  # n_q < n_k, d_v < d_k
    (40, 17, 8, 12, ()),  # n_q > n_k, d_v > d_k
    (33, 33, 8, 8, (2, 3)),  # batch and heads
    (5, 9, 1, 1, (3,)),  # d = 1
]
DTYPES = ["float32", "float64"]


def shape_id(shape):
    n_q, n_k, d_k, d_v, lead = shape
    return f"q{n_q}k{n_k}d{d_k}v{d_v}" + (f"lead{'x'.join(map(str, lead))}" if lead else "")


def assert_agrees(impl, q, k, v, causal=False, scale=None):
    out = impl.attention(q, k, v, causal=causal, scale=scale)
    assert out.shape == (*q.shape[:-1], v.shape[-1])
    assert out.dtype == q.dtype
    args = impls.check_attention_args(q, k, v, causal=causal, scale=scale)
    agreement = checking.compare(out, args)
    assert agreement.ok, (
        f"{impl.name}: max_rel_err {agreement.max_rel_err:.3g} at {agreement.where} "
        f"> tolerance {agreement.tolerance:.3g} ({agreement.problem})"
    )
    return out


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", SHAPES, ids=shape_id)
def test_agrees_with_float64_reference(impl, shape, causal, dtype):
    n_q, n_k, d_k, d_v, lead = shape
    simulator_limit_or_skip(impl, max(n_q, n_k), int(np.prod(lead)))
    q, k, v = make_qkv(n_q, n_k, d_k, d_v, lead=lead, dtype=dtype, seed=n_q * 31 + d_k)
    assert_agrees(impl, q, k, v, causal=causal)


# (n_q, n_k, d_k, d_v, batch, heads, kv_heads): heads / kv_heads query heads share a kv head
GROUPED = [
    (9, 9, 8, 8, 1, 4, 2),
    (1, 300, 16, 16, 2, 4, 1),  # decode: one query against a long cache, every head shares it
    (3, 270, 16, 12, 1, 8, 2),  # a few queries (speculative decode), d_v != d_k
    (40, 17, 8, 8, 1, 6, 3),  # n_q > n_k
    (33, 70, 8, 8, 2, 2, 1),  # n_q < n_k, two batch entries
]


def grouped_id(shape):
    n_q, n_k, d_k, d_v, batch, heads, kv_heads = shape
    return f"q{n_q}k{n_k}d{d_k}v{d_v}b{batch}h{heads}kv{kv_heads}"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("shape", GROUPED, ids=grouped_id)
def test_grouped_query_heads_agree_with_float64_reference(impl, shape, causal, dtype):
    """Query head h attends with key/value head h // (heads / kv_heads), as torch's enable_gqa."""
    n_q, n_k, d_k, d_v, batch, heads, kv_heads = shape
    simulator_limit_or_skip(impl, max(n_q, n_k), batch * heads)
    q, k, v = make_qkv(
        n_q, n_k, d_k, d_v, lead=(batch, heads), kv_heads=kv_heads, dtype=dtype, seed=n_k + heads
    )
    assert_agrees(impl, q, k, v, causal=causal)


@pytest.mark.parametrize("dtype", DTYPES)
def test_custom_scale(impl, dtype):
    q, k, v = make_qkv(33, 21, 8, 6, dtype=dtype, seed=1)
    out = assert_agrees(impl, q, k, v, scale=0.37)
    default = impl.attention(q, k, v)
    assert not np.allclose(out, default), "the scale argument must change the result"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_large_scores_are_finite_and_correct(impl, causal, dtype):
    """Inputs times 1e3 make scores of about 1e6: a stable softmax must not overflow.

    Such a softmax is saturated: each row's top score leads the next by far more than the
    rounding error of a float32 score, so the output is the top-scoring value row in any
    precision, and a tight absolute check (not the size-derived tolerance) is justified.
    """
    q, k, v = make_qkv(33, 33, 8, 8, dtype=dtype, seed=2)
    q, k = q * 1000, k * 1000
    out = impl.attention(q, k, v, causal=causal)
    assert np.isfinite(out).all()
    scores = q.astype(np.float64) @ k.T.astype(np.float64) / np.sqrt(8)
    if causal:
        scores[np.triu_indices(33, k=1)] = -np.inf
    top2 = np.sort(scores, axis=1)[:, -2:]
    gaps = (top2[:, 1] - top2[:, 0])[1:] if causal else top2[:, 1] - top2[:, 0]
    assert gaps.min() > 1e3  # the premise above holds for these inputs
    expected = checking.reference_attention(q, k, v, causal=causal)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6 * np.abs(v).max())


@pytest.mark.parametrize(
    "layout",
    ["transposed", "strided", "fortran"],
)
def test_non_contiguous_inputs(impl, layout):
    q, k, v = make_qkv(24, 24, 12, 12, lead=(2,), dtype="float64", seed=3)
    if layout == "transposed":
        q2, k2, v2 = (np.swapaxes(np.swapaxes(x, -1, -2).copy(), -1, -2) for x in (q, k, v))
    elif layout == "strided":
        q2, k2, v2 = (np.repeat(x, 2, axis=-2)[..., ::2, :] for x in (q, k, v))
    else:
        q2, k2, v2 = (np.asfortranarray(x) for x in (q, k, v))
    assert not q2.flags.c_contiguous
    np.testing.assert_array_equal(q2, q)
    for causal in (False, True):
        assert_agrees(impl, q2, k2, v2, causal=causal)


def overwrite_then_run(impl, shape, causal, dtype) -> checking.Agreement:
    """prepare, overwrite q, k and v in place with other values, run: the timing rule says the
    output must be that of the new values (prepare may not read them)."""
    n_q, n_k, d_k, d_v, lead = shape
    q, k, v = make_qkv(n_q, n_k, d_k, d_v, lead=lead, dtype=dtype, seed=11)
    args = impls.check_attention_args(q, k, v, causal=causal)
    call = impl.prepare_checked(args)
    new_q, new_k, new_v = make_qkv(n_q, n_k, d_k, d_v, lead=lead, dtype=dtype, seed=12)
    args.q[...] = new_q.reshape(args.q.shape)
    args.k[...] = new_k.reshape(args.k.shape)
    args.v[...] = new_v.reshape(args.v.shape)
    call.run()
    return checking.compare(call.fetch(), args)


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_run_reads_the_inputs_prepare_only_plans(impl, causal, dtype):
    """Every step that reads the values of q, k, v is in the timed `run`."""
    if impl.device != "cpu":
        pytest.skip(
            f"{impl.name} copies the inputs to the device in prepare, as the rule allows; "
            "its own tests overwrite the device copies"
        )
    agreement = overwrite_then_run(impl, (37, 300, 16, 12, (2,)), causal, dtype)
    assert agreement.ok, f"{impl.name}: output of the old inputs? {agreement.max_rel_err:.3g}"


def test_the_overwrite_check_catches_a_prepare_that_reads_the_inputs(monkeypatch):
    numpy_impl = impls.get("numpy")
    real_prepare = numpy_impl.module.prepare

    def prepare_that_scales_q(args):  # pre-scales q outside the timed call: against the rule
        scaled = dataclasses.replace(args, q=args.q * args.scale, scale=1.0)
        return real_prepare(scaled)

    monkeypatch.setattr(numpy_impl.module, "prepare", prepare_that_scales_q)
    assert not overwrite_then_run(numpy_impl, (37, 300, 16, 12, (2,)), False, "float64").ok


def test_declares_its_interface(impl):
    assert impl.description and "\n" not in impl.description
    assert set(impl.dtypes) <= set(impls.SUPPORTED_DTYPES) and impl.dtypes
    assert impl.device in ("cpu", "cuda")


def test_numpy_row_blocks_bound_the_memory_and_keep_every_thread_busy():
    from impls.numpy_vectorized import MIN_ROWS, SCORE_BLOCK_BYTES, block_rows

    assert block_rows(8192, 8192, 4, 2) * 8192 * 4 <= SCORE_BLOCK_BYTES  # memory bound
    assert block_rows(1024, 1024, 4, 2) == 256  # 2 blocks for each of 2 threads
    assert block_rows(1 << 20, 1 << 20, 8, 2) == MIN_ROWS  # never fewer rows than BLAS needs
    assert block_rows(600, 600, 4, 2) == 150  # 2 blocks for each of 2 threads
    assert block_rows(40, 4000, 8, 2) == MIN_ROWS  # balance yields to BLAS's minimum
    assert block_rows(512, 512, 4, 2) == 512  # small scores: one block, no thread overhead


@pytest.mark.parametrize("causal", [False, True], ids=["full", "causal"])
def test_numpy_row_blocks_and_threads_cover_every_row(monkeypatch, causal):
    """Tiny blocks: many blocks per head, blocks off the diagonal, shared among threads."""
    import impls.numpy_vectorized as blocked

    monkeypatch.setattr(blocked, "SCORE_BLOCK_BYTES", 1)  # MIN_ROWS (16) rows per block
    monkeypatch.setattr(blocked, "ONE_BLOCK_BYTES", 0)  # even for these small scores
    q, k, v = make_qkv(53, 45, 8, 6, lead=(3,), dtype="float64", seed=5)
    call = impls.get("numpy").prepare(q, k, v, causal=causal)
    assert call.state["block"] == blocked.MIN_ROWS
    call.run()
    args = impls.check_attention_args(q, k, v, causal=causal)
    assert checking.compare(call.fetch(), args).ok
    # grouped-query heads: each block's rows of 4 heads stacked, written back through scratch
    q, k, v = make_qkv(53, 45, 8, 6, lead=(1, 8), kv_heads=2, dtype="float64", seed=6)
    call = impls.get("numpy").prepare(q, k, v, causal=causal)
    assert call.state["block"] == blocked.MIN_ROWS // 4 < 53
    call.run()
    args = impls.check_attention_args(q, k, v, causal=causal)
    assert checking.compare(call.fetch(), args).ok
