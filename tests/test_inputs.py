"""Bad input is refused before any computation, with an error naming the argument."""

import numpy as np
import pytest

import impls
from harness.worker.inputs import make_qkv

q, k, v = make_qkv(6, 6, 4, dtype="float64", seed=0)


def with_value(array, index, value):
    array = array.copy()
    array[index] = value
    return array


BAD_INPUTS = {
    "d_k mismatch": (
        dict(k=make_qkv(6, 6, 5, dtype="float64")[1]),
        ValueError,
        "k: expected last dimension d_k = 4",
    ),
    "n_k mismatch": (
        dict(v=make_qkv(6, 7, 4, dtype="float64")[2]),
        ValueError,
        "v: expected n_k = 6",
    ),
    "leading dims": (dict(q=q[None].repeat(2, 0)), ValueError, "leading (batch, head) dimensions"),
    "kv heads not dividing": (
        dict(
            q=make_qkv(6, 6, 4, lead=(1, 6), dtype="float64")[0],
            k=k[None, None].repeat(4, 1),
            v=v[None, None].repeat(4, 1),
        ),
        ValueError,
        "k: expected a number of key/value heads that divides the 6 query heads",
    ),
    "k and v heads differ": (dict(k=k[None]), ValueError, "k, v: expected the same leading"),
    "1-d q": (dict(q=q[0]), ValueError, "q: expected at least 2 dimensions"),
    "0-d v": (dict(v=np.float64(1.0)), ValueError, "v: expected at least 2 dimensions"),
    "int dtype": (dict(q=q.astype(np.int64)), TypeError, "q: expected a floating array"),
    "float16": (dict(k=k.astype(np.float16)), TypeError, "k: expected a floating array"),
    "complex": (dict(v=v.astype(complex)), TypeError, "v: expected a floating array"),
    "mixed dtypes": (dict(q=q.astype(np.float32)), TypeError, "expected one dtype"),
    "NaN in q": (dict(q=with_value(q, (1, 2), np.nan)), ValueError, "q: expected finite values"),
    "Inf in k": (dict(k=with_value(k, (0, 0), np.inf)), ValueError, "k: expected finite values"),
    "-Inf in v": (dict(v=with_value(v, (5, 3), -np.inf)), ValueError, "v: expected finite"),
    "empty q": (dict(q=q[:0]), ValueError, "q: expected a non-empty sequence"),
    "empty k and v": (dict(k=k[:0], v=v[:0]), ValueError, "k: expected a non-empty sequence"),
    "d = 0": (dict(q=q[:, :0], k=k[:, :0]), ValueError, "q: expected a feature dimension d >= 1"),
    "d_v = 0": (dict(v=v[:, :0]), ValueError, "v: expected a feature dimension d >= 1"),
    "scale 0": (dict(scale=0.0), ValueError, "scale: expected a positive finite number"),
    "scale < 0": (dict(scale=-1.0), ValueError, "scale: expected a positive finite number"),
    "scale NaN": (dict(scale=float("nan")), ValueError, "scale: expected a positive finite number"),
    "scale inf": (dict(scale=float("inf")), ValueError, "scale: expected a positive finite number"),
    "scale str": (dict(scale="0.5"), TypeError, "scale: expected a positive finite number"),
    "scale bool": (dict(scale=True), TypeError, "scale: expected a positive finite number"),
    "causal str": (dict(causal="yes"), TypeError, "causal: expected True or False"),
    "check_finite None": (dict(check_finite=None), TypeError, "check_finite: expected True or"),
    "not an array": (dict(q=object()), TypeError, "q: expected a floating array"),
}


@pytest.mark.parametrize("case", BAD_INPUTS, ids=list(BAD_INPUTS))
@pytest.mark.parametrize("name", impls.names())
def test_bad_input_is_refused_naming_the_argument(name, case):
    changes, error, message = BAD_INPUTS[case]
    call = dict(q=q, k=k, v=v, causal=False, scale=None) | changes
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        impls.get(name).attention(**call)
    assert "got" in str(info.value)  # says what was given


def test_check_finite_false_skips_the_read_of_every_value():
    """As in scipy.linalg: the caller vouches for its inputs, and NaN in gives NaN out."""
    with_nan = with_value(q, (1, 2), np.nan)
    out = impls.get("numpy").attention(with_nan, k, v, check_finite=False)
    assert np.isnan(out[1]).all() and np.isfinite(np.delete(out, 1, axis=0)).all()


def test_error_says_what_was_given():
    with pytest.raises(ValueError) as info:
        impls.get("numpy").attention(q, make_qkv(6, 6, 5, dtype="float64")[1], v)
    assert "(6, 5)" in str(info.value)


def test_unknown_implementation_lists_the_valid_names():
    with pytest.raises(impls.UnknownImplementationError) as info:
        impls.get("no_such_impl")
    for name in impls.names():
        assert name in str(info.value)


def test_unsupported_dtype_of_an_implementation_is_named(monkeypatch):
    impl = impls.get("numpy")
    narrowed = impls.Implementation(**{**impl.__dict__, "dtypes": ("float64",)})
    with pytest.raises(
        TypeError, match="dtype: implementation 'numpy' supports float64, got float32"
    ):
        narrowed.attention(*make_qkv(4, 4, 2))
