"""The agreement check: reference, tolerance model and error report, against worked numbers."""

import math

import numpy as np
import pytest

import impls
from harness.worker import checking


def test_causal_reference_is_top_left_aligned():
    """With n_q = 2 < n_k = 3, row 0 sees key 0 only, row 1 keys 0 and 1 (torch's is_causal)."""
    q = np.zeros((2, 1))
    k = np.zeros((3, 1))
    v = np.array([[3.0], [5.0], [100.0]])
    out = checking.reference_attention(q, k, v, causal=True)
    np.testing.assert_allclose(out[:, 0], [3.0, 4.0])


def test_causal_rows_past_the_keys_see_every_key():
    q = np.zeros((3, 1))
    k = np.zeros((2, 1))
    v = np.array([[1.0], [3.0]])
    out = checking.reference_attention(q, k, v, causal=True)
    np.testing.assert_allclose(out[:, 0], [1.0, 2.0, 2.0])


def test_reference_on_a_subset_of_rows_equals_the_full_result():
    rng = np.random.default_rng(0)
    q, k, v = (rng.standard_normal((9, 4)) for _ in range(3))
    rows = np.array([0, 4, 8])
    full = checking.reference_attention(q, k, v, causal=True)
    np.testing.assert_allclose(checking.reference_attention(q, k, v, True, rows=rows), full[rows])


def test_tolerance_formula_worked_by_hand():
    # float32 eps = 2**-23; d_k = 16, T = 2, n_k = 64: 4 * eps * (2*4*2 + 8 + 4) = 112 * eps
    assert checking.tolerance("float32", 64, 16, 2.0) == pytest.approx(112 * 2.0**-23)
    assert checking.tolerance("float64", 64, 16, 2.0) == pytest.approx(112 * 2.0**-52)


def test_tolerance_grows_with_size_and_score_magnitude():
    base = checking.tolerance("float32", 1024, 64, 5.0)
    assert checking.tolerance("float32", 4096, 64, 5.0) > base
    assert checking.tolerance("float32", 1024, 128, 5.0) > base
    assert checking.tolerance("float32", 1024, 64, 50.0) > base


def test_score_magnitude_is_scale_times_largest_abs_dot_product():
    q = np.array([[1.0, -2.0]])
    k = np.array([[3.0, 1.0], [-1.0, -1.0]])
    # sum |q||k|: row0 = 3 + 2 = 5, row1 = 1 + 2 = 3
    assert checking.score_magnitude(q, k, 0.5) == pytest.approx(2.5)


def test_compare_reports_the_worst_element_and_its_place():
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal((2, 5, 3)) for _ in range(3))
    args = impls.check_attention_args(q, k, v)
    out = checking.reference_attention(q, k, v).copy()
    out[1, 3, 2] += 0.25
    agreement = checking.compare(out, args)
    assert agreement.where == (1, 3, 2)
    assert agreement.max_abs_err == pytest.approx(0.25)
    assert agreement.max_rel_err == pytest.approx(0.25 / np.abs(v).max())
    assert not agreement.ok


def test_compare_flags_non_finite_and_misshapen_outputs():
    q, k, v = (np.ones((3, 2)) for _ in range(3))
    args = impls.check_attention_args(q, k, v)
    nan_out = np.ones((3, 2))
    nan_out[2, 1] = np.nan
    assert checking.compare(nan_out, args).problem == "non-finite output at (0, 2, 1)"
    assert "shape" in checking.compare(np.ones((3, 3)), args).problem
    assert checking.compare(np.ones((3, 2)), args).ok  # equal scores: the mean of equal rows


def test_float32_error_of_numpy_is_well_inside_the_tolerance():
    """The tolerance is not vacuous: a correct float32 result sits far below it."""
    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((512, 64)).astype(np.float32) for _ in range(3))
    args = impls.check_attention_args(q, k, v)
    agreement = checking.compare(impls.get("numpy").attention(q, k, v), args)
    assert agreement.ok
    assert agreement.max_rel_err < agreement.tolerance / 5
    assert agreement.tolerance < 1e-3 and math.isfinite(agreement.tolerance)


def test_compare_on_a_subset_of_rows_reports_the_full_row_index():
    rng = np.random.default_rng(3)
    q, k, v = (rng.standard_normal((1, 40, 4)) for _ in range(3))
    args = impls.check_attention_args(q, k, v)
    out = checking.reference_attention(q, k, v).copy()
    out[0, 30, 1] += 1.0
    agreement = checking.compare(out, args, rows=np.array([0, 10, 30, 39]))
    assert agreement.where == (0, 30, 1)
