"""numba_cuda's tensor-core kernel on the CPU: the m16n8k8 TF32 fragment layout, the model of
one mma, the 3xTF32 split, and the kernel's own per-warp code run in NumPy (fragment_model)
against a float64 reference. No numba needed: the simulator cannot run the kernel's inline PTX
or its warp shuffles, so this is where its algorithm is checked without a GPU."""

from __future__ import annotations

import math

import numpy as np
import pytest

from harness.worker.checking import reference_attention, score_magnitude, tolerance
from impls.numba_cuda import fragment_model, fragments, plan
from impls.numba_cuda.fragments import (
    A_REGISTERS,
    B_REGISTERS,
    C_REGISTERS,
    K,
    M,
    N,
    a_col,
    a_row,
    b_col,
    b_row,
    c_col,
    c_row,
)

TOL32 = dict(rtol=2e-5, atol=2e-5)  # tests/test_numba_cuda.py's float32 tolerance
LANES = np.arange(32, dtype=np.uint64)
LAYOUTS = {  # name: (row map, column map, registers, rows, columns)
    "A": (a_row, a_col, A_REGISTERS, M, K),
    "B": (b_row, b_col, B_REGISTERS, K, N),
    "C": (c_row, c_col, C_REGISTERS, M, N),
}


def _coordinates(name):
    row_of, col_of, registers, _, _ = LAYOUTS[name]
    return {
        (lane, r): (
            int(row_of(np.uint64(lane), np.uint64(r))),
            int(col_of(np.uint64(lane), np.uint64(r))),
        )
        for lane in range(32)
        for r in range(registers)
    }


@pytest.mark.parametrize("name", LAYOUTS)
def test_each_layout_is_a_bijection_onto_its_tile(name):
    _, _, registers, rows, columns = LAYOUTS[name]
    cells = list(_coordinates(name).values())
    assert len(cells) == 32 * registers == rows * columns
    assert set(cells) == {(i, j) for i in range(rows) for j in range(columns)}


def _cute(shape, stride, value_count, rows):
    """CuTe's (thread, value) -> (row, column) of a layout ((4, 8), values) : ((s0, s1), vs),
    flat index row + rows * column (column-major, as CuTe's MMA traits state them)."""
    out = {}
    for lane in range(32):
        t0, t1 = lane % 4, lane // 4
        for value in range(value_count):
            index = stride[0] * t0 + stride[1] * t1
            rest = value
            for size, step in zip(shape, stride[2:], strict=True):
                index += step * (rest % size)
                rest //= size
            out[(lane, value)] = (index % rows, index // rows)
    return out


def test_layouts_are_cutlass_cute_traits_for_sm80_16x8x8_tf32():
    """MMA_Traits<SM80_16x8x8_F32TF32TF32F32_TN> (cute/atom/mma_traits_sm80.hpp):
    A ((4,8),(2,2)):((16,1),(8,64)) over 16 x 8; B ((4,8),2):((8,1),32) over (n, k) = 8 x 8;
    C SM80_16x8_Row ((4,8),(2,2)):((32,1),(16,8)) over 16 x 8."""
    assert _coordinates("A") == _cute((2, 2), (16, 1, 8, 64), 4, M)
    assert _coordinates("C") == _cute((2, 2), (32, 1, 16, 8), 4, M)
    b_cute = _cute((2,), (8, 1, 32), 2, N)  # CuTe indexes B by (n, k)
    assert _coordinates("B") == {key: (k, n) for key, (n, k) in b_cute.items()}


def test_layouts_are_the_ptx_isa_tables():
    """PTX ISA, mma.m16n8k8 .tf32: groupID = lane >> 2, threadID_in_group = lane % 4; A rows
    groupID (a0, a2) or groupID + 8 (a1, a3), columns threadID_in_group (a0, a1) or + 4; B row
    threadID_in_group (+ 4 for b1), column groupID; C rows groupID (c0, c1) or + 8, column
    threadID_in_group * 2 + (i & 1)."""
    for lane in range(32):
        g, t = lane >> 2, lane % 4
        expected_a = [(g, t), (g + 8, t), (g, t + 4), (g + 8, t + 4)]
        expected_b = [(t, g), (t + 4, g)]
        expected_c = [(g + 8 * (i >= 2), 2 * t + (i & 1)) for i in range(4)]
        for name, expected in (("A", expected_a), ("B", expected_b), ("C", expected_c)):
            coordinates = _coordinates(name)
            assert [coordinates[(lane, r)] for r in range(len(expected))] == expected


def test_the_score_fragment_is_the_weights_a_fragment_under_a_key_permutation():
    """P V reads P's A fragment from the C fragment of the scores, register P_FROM_C[r], with
    no shuffle: same row, and the A column k' stands for key pv_key(k'). V's B rows use the same
    pv_key, so each product pairs a key's weight with that key's values."""
    a, c = _coordinates("A"), _coordinates("C")
    for lane in range(32):
        for r in range(4):
            a_i, a_k = a[(lane, r)]
            c_i, c_key = c[(lane, fragments.P_FROM_C[r])]
            assert (c_i, c_key) == (a_i, int(fragments.pv_key(np.uint64(a_k))))
    assert sorted(int(fragments.pv_key(np.uint64(k))) for k in range(8)) == list(range(8))


def test_tf32_rounds_to_nearest_ties_away_in_10_mantissa_bits():
    one = 1.0
    cases = {
        one + 2**-10: one + 2**-10,  # representable: unchanged
        one + 2**-11: one + 2**-10,  # a tie: away from zero
        -(one + 2**-11): -(one + 2**-10),
        one + 2**-12: one,  # below half: down
        one + 2**-11 + 2**-20: one + 2**-10,
        float(np.float32(3.0 - 2**-22)): 3.0,  # carries into the next binade's value
    }
    x = np.array(list(cases), np.float32)
    np.testing.assert_array_equal(fragments.tf32(x), np.array(list(cases.values()), np.float32))
    special = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0], np.float32)
    out = fragments.tf32(special)
    assert np.isposinf(out[0]) and np.isneginf(out[1]) and np.isnan(out[2])
    rng = np.random.default_rng(1)
    y = rng.standard_normal(10000).astype(np.float32) * np.float32(1e3)
    rounded = fragments.tf32(y)
    assert not (rounded.view(np.uint32) & np.uint32(0x1FFF)).any()  # low 13 bits clear
    assert np.all(np.abs(rounded - y) <= np.abs(y) * 2.0**-11)


def test_3xtf32_split_keeps_float32_accuracy_and_each_half_is_tf32():
    rng = np.random.default_rng(2)
    x = rng.standard_normal(10000).astype(np.float32)
    hi, lo = fragments.split_tf32(x)
    for half in (hi, lo):
        assert not (half.view(np.uint32) & np.uint32(0x1FFF)).any()
    error = np.abs(hi.astype(np.float64) + lo.astype(np.float64) - x.astype(np.float64))
    assert np.all(error <= np.abs(x) * 2.0**-21)  # 22 of float32's 24 significant bits
    assert np.abs(hi.astype(np.float64) - x).max() > 1e3 * error.max()  # hi alone: TF32


def test_one_mma_is_a_times_b_plus_c_for_tf32_exact_inputs():
    rng = np.random.default_rng(3)
    a = rng.integers(-512, 512, (M, K)).astype(np.float32)  # 10-bit integers: TF32-exact
    b = rng.integers(-512, 512, (K, N)).astype(np.float32)
    c = rng.integers(-1000, 1000, (M, N)).astype(np.float32)
    d = fragments.warp_mma(
        fragments.gather(a, a_row, a_col, A_REGISTERS),
        fragments.gather(b, b_row, b_col, B_REGISTERS),
        fragments.gather(c, c_row, c_col, C_REGISTERS),
    )
    np.testing.assert_array_equal(fragments.scatter(d, c_row, c_col, (M, N)), a @ b + c)


def test_one_mma_rounds_its_inputs_to_tf32():
    rng = np.random.default_rng(4)
    a = rng.standard_normal((M, K)).astype(np.float32)
    b = rng.standard_normal((K, N)).astype(np.float32)
    zero = np.zeros((32, 4), np.float32)
    d = fragments.warp_mma(
        fragments.gather(a, a_row, a_col, A_REGISTERS),
        fragments.gather(b, b_row, b_col, B_REGISTERS),
        zero,
    )
    product = fragments.scatter(d, c_row, c_col, (M, N)).astype(np.float64)
    tf32_product = fragments.tf32(a).astype(np.float64) @ fragments.tf32(b).astype(np.float64)
    np.testing.assert_allclose(product, tf32_product, rtol=1e-6, atol=1e-6)
    assert np.abs(product - a.astype(np.float64) @ b).max() > 1e-4  # TF32, not float32


# --- the kernel's per-warp code in NumPy -----------------------------------------------------


def _inputs(batch, kv_batch, n_q, n_k, d_k, d_v, seed, mult=1.0):
    rng = np.random.default_rng(seed)
    q = (rng.standard_normal((batch, n_q, d_k)) * mult).astype(np.float32)
    k = (rng.standard_normal((kv_batch, n_k, d_k)) * mult).astype(np.float32)
    v = rng.standard_normal((kv_batch, n_k, d_v)).astype(np.float32)
    return q, k, v


def _reference(q, k, v, causal, scale):
    group = q.shape[0] // k.shape[0]
    k, v = (np.repeat(x, group, axis=0) for x in (k, v))
    return reference_attention(q, k, v, causal, scale)


def _harness_tolerance(q, k, v, scale, eps_dtype="float32"):
    """harness/worker/checking.py's float32 tolerance, on max |out - ref| / max |v|."""
    size = score_magnitude(q, np.repeat(k, q.shape[0] // k.shape[0], axis=0), scale)
    return tolerance(eps_dtype, k.shape[1], q.shape[2], size) * np.abs(v).max()


MODEL_CASES = [
    # batch, kv_batch, n_q, n_k, d_k, d_v, causal, splits
    (1, 1, 64, 64, 128, 128, False, 1),  # one full block, one K/V tile of 32 keys per half
    (1, 1, 70, 90, 64, 64, True, 1),  # a row tail (6 rows in the second block) and key tail
    (2, 2, 40, 40, 128, 128, True, 1),  # causal: warps 3, 4 idle, tiles past the diagonal
    (1, 1, 33, 100, 32, 32, False, 2),  # key splits, merged as merge.py does
    (2, 2, 70, 100, 64, 64, True, 3),  # causal splits of unequal row tiles
    (1, 1, 20, 70, 30, 50, True, 1),  # d_k != d_v, short of the width; n_q < n_k
    (1, 1, 40, 20, 100, 17, True, 1),  # causal, n_q > n_k: late rows see every key
    (6, 2, 17, 45, 64, 64, True, 2),  # grouped-query heads: 3 query heads per K/V head
    (1, 1, 16, 16, 8, 8, False, 1),  # narrower than the width: zero-padded features
]


@pytest.mark.parametrize("batch, kv_batch, n_q, n_k, d_k, d_v, causal, splits", MODEL_CASES)
def test_the_kernel_in_3xtf32_matches_float64_within_float32_tolerance(
    batch, kv_batch, n_q, n_k, d_k, d_v, causal, splits
):
    q, k, v = _inputs(batch, kv_batch, n_q, n_k, d_k, d_v, seed=n_q + n_k + d_k)
    scale = 1 / math.sqrt(d_k)
    width = max(plan.MMA_WIDTHS[0], plan.width_for(d_k, d_v))
    cfg = plan.mma_config(width)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = fragment_model.model_attention(q, k, v, causal, scale, cfg, splits)
    expected = _reference(q, k, v, causal, scale)
    assert out.shape == expected.shape and out.dtype == np.float32
    np.testing.assert_allclose(out, expected, **TOL32)
    assert np.abs(out - expected).max() <= _harness_tolerance(q, k, v, scale)


def test_plain_tf32_is_measurably_worse_and_why_the_split_matters():
    """One TF32 product rounds Q, K, P and V to 10 mantissa bits (relative 2^-11 each), and the
    error of the scores grows with sqrt(d) of such roundings: the output misses the float32
    tolerance of these tests by an order of magnitude, 3xTF32 meets it with room. The TF32
    variant's own tolerance is the harness formula with TF32's epsilon, 2^-10, for float32's.
    (At d = 128 the harness's float32 bound itself, a worst case with a safety factor of 4,
    would still pass plain TF32 on these normal inputs: that check alone cannot tell them apart.)
    """
    q, k, v = _inputs(1, 1, 64, 128, 128, 128, seed=5)
    scale = 1 / math.sqrt(128)
    expected = _reference(q, k, v, False, scale)
    out = {
        passes: fragment_model.model_attention(q, k, v, False, scale, plan.mma_config(128, passes))
        for passes in (3, 1)
    }
    errors = {passes: np.abs(x - expected).max() for passes, x in out.items()}
    np.testing.assert_allclose(out[3], expected, **TOL32)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(out[1], expected, **TOL32)
    assert errors[1] > 100 * errors[3]
    float32_tolerance = _harness_tolerance(q, k, v, scale)
    tf32_tolerance = float32_tolerance * 2.0**-10 / float(np.finfo(np.float32).eps)
    assert errors[3] <= float32_tolerance / 100 and errors[1] <= tf32_tolerance / 100


def test_reading_v_without_the_key_permutation_would_be_wrong(monkeypatch):
    """The check can fail: with pv_key the identity, P's columns meet the wrong keys' values."""
    q, k, v = _inputs(1, 1, 16, 32, 32, 32, seed=6)
    scale = 1 / math.sqrt(32)
    cfg = plan.mma_config(32)
    right = fragment_model.model_attention(q, k, v, False, scale, cfg)
    monkeypatch.setattr(fragments, "pv_key", lambda k: k)
    wrong = fragment_model.model_attention(q, k, v, False, scale, cfg)
    expected = _reference(q, k, v, False, scale)
    np.testing.assert_allclose(right, expected, **TOL32)
    assert np.abs(wrong - expected).max() > 1e-2


def test_large_scores_stay_finite_and_fully_masked_tiles_are_never_read():
    """Scores x 1e6 (each row's maximum far from the others), and NaN in keys no row of the
    causal block can see: the model reads only keys < 64 for rows 0..63."""
    q, k, v = _inputs(1, 1, 64, 70, 64, 64, seed=7, mult=1e3)
    expected = _reference(q, k[:, :64], v[:, :64], True, 1.0)
    k[:, 64:] = np.nan
    v[:, 64:] = np.nan
    out = fragment_model.model_attention(q, k, v, True, 1.0, plan.mma_config(64))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, expected, **TOL32)


def test_the_model_rejects_widths_its_config_cannot_hold():
    q, k, v = _inputs(1, 1, 4, 4, 40, 40, seed=8)
    with pytest.raises(ValueError, match="exceed width 32"):
        fragment_model.model_attention(q, k, v, False, 0.1, plan.mma_config(32))
