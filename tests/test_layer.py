"""self_attention: the seed's whole layer (projections, heads, attention)."""

import numpy as np
import pytest
from conftest import simulator_limit_or_skip

import impls
from harness.worker import checking


def layer_inputs(n=9, d_model=12, width=8, lead=(), dtype="float64", seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((*lead, n, d_model)).astype(dtype)
    w_q, w_k, w_v = (rng.standard_normal((d_model, width)).astype(dtype) for _ in range(3))
    return x, w_q, w_k, w_v


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("heads", [1, 2, 4])
def test_layer_is_per_head_attention_of_the_projections(impl, heads, causal):
    simulator_limit_or_skip(impl, 9, 2 * heads)
    x, w_q, w_k, w_v = layer_inputs(lead=(2,))
    out = impls.self_attention(x, w_q, w_k, w_v, heads=heads, causal=causal, impl=impl.name)
    assert out.shape == (2, 9, 8)
    width = 8 // heads
    for h in range(heads):
        cols = slice(h * width, (h + 1) * width)
        expected = checking.reference_attention(
            x @ w_q[:, cols], x @ w_k[:, cols], x @ w_v[:, cols], causal=causal
        )
        np.testing.assert_allclose(out[..., cols], expected, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_grouped_query_layer_shares_each_key_value_head(impl, causal):
    """heads=4, kv_heads=2: query heads 0, 1 attend with key/value head 0; 2, 3 with head 1."""
    simulator_limit_or_skip(impl, 9, 8)
    x, w_q, _, _ = layer_inputs(lead=(2,))
    _, w_k, w_v, _ = layer_inputs(width=4, seed=1)  # two key/value heads of width 2
    out = impls.self_attention(x, w_q, w_k, w_v, heads=4, kv_heads=2, causal=causal, impl=impl.name)
    assert out.shape == (2, 9, 8)
    for h in range(4):
        kv = slice(h // 2 * 2, h // 2 * 2 + 2)
        expected = checking.reference_attention(
            x @ w_q[:, 2 * h : 2 * h + 2], x @ w_k[:, kv], x @ w_v[:, kv], causal=causal
        )
        np.testing.assert_allclose(out[..., 2 * h : 2 * h + 2], expected, rtol=1e-10, atol=1e-12)


def test_layer_keeps_the_dtype():
    out = impls.self_attention(*layer_inputs(dtype="float32"), heads=2)
    assert out.dtype == np.float32


BAD_LAYER = {
    "w_q rows": (dict(w_q=np.ones((5, 8))), ValueError, "w_q: expected shape \\(d_model=12"),
    "w_k shape": (dict(w_k=np.ones((12, 4))), ValueError, "w_k: expected 8 columns"),
    "kv_heads divide": (
        dict(heads=4, kv_heads=3),
        ValueError,
        "kv_heads: expected a divisor of heads=4",
    ),
    "kv_heads zero": (dict(kv_heads=0), ValueError, "kv_heads: expected a positive integer"),
    "heads divide": (
        dict(heads=3),
        ValueError,
        "w_q: expected a column count divisible by heads=3",
    ),
    "heads zero": (dict(heads=0), ValueError, "heads: expected a positive integer"),
    "heads float": (dict(heads=2.0), ValueError, "heads: expected a positive integer"),
    "x 1-d": (dict(x=np.ones(12)), ValueError, "x: expected at least 2 dimensions"),
    "x int": (dict(x=np.ones((9, 12), int)), TypeError, "x: expected a floating array"),
    "x NaN": (dict(x=np.full((9, 12), np.nan)), ValueError, "x: expected finite values"),
    "w dtype": (dict(w_v=np.ones((12, 8), np.float32)), TypeError, "w_v: expected dtype float64"),
    "unknown impl": (dict(impl="nope"), LookupError, "unknown implementation 'nope'"),
}


@pytest.mark.parametrize("case", BAD_LAYER, ids=list(BAD_LAYER))
def test_layer_refuses_bad_input(case):
    x, w_q, w_k, w_v = layer_inputs()
    changes, error, message = BAD_LAYER[case]
    call = dict(x=x, w_q=w_q, w_k=w_k, w_v=w_v, heads=2) | changes
    with pytest.raises(error, match=message):
        impls.self_attention(**call)
