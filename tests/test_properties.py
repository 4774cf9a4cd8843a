"""Properties of attention that every implementation must show, on random shapes (hypothesis)."""

import numpy as np
import pytest
from conftest import simulated
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import impls
from harness.worker import checking


def examples_for(impl):
    """20 random cases each; 3 for a simulated GPU, where one call takes about a second."""
    return settings(
        max_examples=3 if simulated(impl) else 20,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture],
    )


@st.composite
def qkv(draw, min_n=1, max_n=12):
    n_q = draw(st.integers(1, max_n))
    n_k = draw(st.integers(min_n, max_n))
    d_k, d_v = draw(st.integers(1, 6)), draw(st.integers(1, 6))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    size = draw(st.sampled_from([0.1, 1.0, 5.0]))
    q = (size * rng.standard_normal((n_q, d_k))).astype(dtype)
    k = (size * rng.standard_normal((n_k, d_k))).astype(dtype)
    v = rng.standard_normal((n_k, d_v)).astype(dtype)
    return q, k, v, rng


def tol(q, k, v, scale=None):
    """Absolute tolerance: harness.worker.checking's, scaled by max|v| as its errors are."""
    args = impls.check_attention_args(q, k, v, scale=scale)
    size = checking.score_magnitude(args.q, args.k, args.scale)
    return checking.tolerance(args.dtype.name, k.shape[0], q.shape[1], size) * np.abs(v).max()


def test_permuting_keys_with_their_values_changes_nothing(impl):
    examples_for(impl)(given(data=qkv())(permuting_keys_changes_nothing))(impl)


def permuting_keys_changes_nothing(impl, data):
    q, k, v, rng = data
    order = rng.permutation(k.shape[0])
    out = impl.attention(q, k, v)
    permuted = impl.attention(q, k[order], v[order])
    np.testing.assert_allclose(permuted, out, rtol=0, atol=2 * tol(q, k, v))


def test_causal_row_ignores_later_keys(impl):
    examples_for(impl)(given(data=qkv(min_n=2))(causal_row_ignores_later_keys))(impl)


def causal_row_ignores_later_keys(impl, data):
    q, k, v, rng = data
    i = int(rng.integers(0, min(q.shape[0], k.shape[0] - 1)))
    k2, v2 = k.copy(), v.copy()
    k2[i + 1 :] = rng.standard_normal(k2[i + 1 :].shape)
    v2[i + 1 :] = rng.standard_normal(v2[i + 1 :].shape)
    out = impl.attention(q, k, v, causal=True)
    changed = impl.attention(q, k2, v2, causal=True)
    np.testing.assert_allclose(changed[: i + 1], out[: i + 1], rtol=0, atol=2 * tol(q, k, v))


def test_adding_a_constant_to_a_rows_scores_changes_nothing(impl):
    check = given(data=qkv(), shift=st.floats(-50, 50))(constant_row_shift_changes_nothing)
    examples_for(impl)(check)(impl)


def constant_row_shift_changes_nothing(impl, data, shift):
    """Append a feature: q_i gets c_i / scale, every key gets 1, so row i's scores gain c_i."""
    q, k, v, rng = data
    scale = 0.5
    c = (shift * rng.random(q.shape[0])).astype(q.dtype)
    q2 = np.concatenate([q, (c / scale)[:, None].astype(q.dtype)], axis=1)
    k2 = np.concatenate([k, np.ones((k.shape[0], 1), k.dtype)], axis=1)
    out = impl.attention(q, k, v, scale=scale)
    shifted = impl.attention(q2, k2, v, scale=scale)
    np.testing.assert_allclose(shifted, out, rtol=0, atol=2 * tol(q2, k2, v, scale))


def test_outputs_lie_within_their_value_columns(impl):
    examples_for(impl)(given(data=qkv(), causal=st.booleans())(outputs_within_value_columns))(impl)


def outputs_within_value_columns(impl, data, causal):
    q, k, v, _ = data
    out = impl.attention(q, k, v, causal=causal)
    slack = tol(q, k, v)
    assert (out >= v.min(axis=0) - slack).all()
    assert (out <= v.max(axis=0) + slack).all()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_float64_reference_matches_a_hand_worked_case(dtype):
    """q = [1, 0], keys e1 and e2, values 1 and 0, scale 1: out = e / (e + 1)."""
    q = np.array([[1.0, 0.0]], dtype)
    k = np.array([[1.0, 0.0], [0.0, 1.0]], dtype)
    v = np.array([[1.0], [0.0]], dtype)
    expected = np.e / (np.e + 1)
    reference = checking.reference_attention(q, k, v, scale=1.0)
    assert reference.dtype == np.float64  # whatever the inputs' dtype: they are exact here
    assert reference[0, 0] == pytest.approx(expected, rel=1e-15)
    out = impls.get("naive").attention(q, k, v, scale=1.0)
    assert out.dtype == np.dtype(dtype)  # the inputs' dtype, rounded once at the end
    assert out[0, 0] == pytest.approx(expected, rel=float(np.finfo(dtype).eps))
