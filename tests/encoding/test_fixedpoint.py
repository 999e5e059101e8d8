"""Fixed-point encoding: round trips, declared range, NaN/inf, the signed view of Z_n, and
the folding of multiplicative masks into weights."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ppinfer.encoding.fixedpoint import FixedPoint, residue_to_signed, signed_to_residue
from ppinfer.encoding.masks import mask_multipliers
from ppinfer.encoding.numerics import FOLD_PRECISION_BITS, fold_weights, quantize
from ppinfer.errors import EncodingRangeError, PlaintextOverflowError

formats = st.builds(
    lambda frac, extra: FixedPoint(frac_bits=frac, value_bits=frac + extra),
    st.integers(0, 24),
    st.integers(1, 30),
)


@given(fmt=formats, data=st.data())
def test_encode_decode_round_trip_within_half_ulp(fmt: FixedPoint, data: st.DataObject) -> None:
    bound = fmt.max_abs_real
    arrays = hnp.arrays(
        np.float64,
        hnp.array_shapes(max_dims=3, max_side=5),
        elements=st.floats(-bound, bound, allow_nan=False),
    )
    real = data.draw(arrays)
    encoded = fmt.encode(real)
    assert encoded.dtype == np.int64
    assert encoded.shape == real.shape
    assert np.all(np.abs(encoded) < 2**fmt.value_bits)
    assert np.all(np.abs(fmt.decode(encoded) - real) <= 0.5 / fmt.scale)


@given(fmt=formats, sign=st.sampled_from([-1.0, 1.0]))
def test_values_beyond_the_range_are_refused(fmt: FixedPoint, sign: float) -> None:
    beyond = sign * (fmt.max_abs_real + 1.0 / fmt.scale)
    with pytest.raises(EncodingRangeError, match="outside the declared range"):
        fmt.encode(np.array([0.0, beyond]))
    top = int(fmt.encode(np.array([sign * fmt.max_abs_real]))[0]) * int(sign)
    # The top integer itself where float64 holds it (<= 53 bits), else the float below it.
    assert 2**fmt.value_bits - 2 ** max(0, fmt.value_bits - 53) <= top < 2**fmt.value_bits


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_are_refused(bad: float) -> None:
    with pytest.raises(EncodingRangeError, match="NaN or infinite"):
        FixedPoint(frac_bits=8, value_bits=16).encode([1.0, bad])


def test_invalid_formats_are_refused() -> None:
    with pytest.raises(ValueError):
        FixedPoint(frac_bits=10, value_bits=10)
    with pytest.raises(ValueError, match="int64"):
        FixedPoint(frac_bits=10, value_bits=63)


@given(n=st.integers(3, 2**600).filter(lambda v: v % 2 == 1), data=st.data())
def test_signed_residue_round_trip(n: int, data: st.DataObject) -> None:
    half = n // 2
    values = data.draw(st.lists(st.integers(-half + 1, half - 1), max_size=10))
    residues = signed_to_residue(values, n)
    assert all(0 <= r < n for r in residues)
    assert residue_to_signed(residues, n) == values


def test_signed_residue_refuses_overflow() -> None:
    with pytest.raises(PlaintextOverflowError):
        signed_to_residue([63], 127)
    with pytest.raises(PlaintextOverflowError):
        signed_to_residue([-63], 127)
    assert signed_to_residue([62, -62], 127) == [62, 65]


def test_exact_matvec_matches_python_integers() -> None:
    import secrets

    import numpy as np

    from ppinfer.encoding.numerics import exact_matvec

    rng = np.random.default_rng(3)
    weights = rng.integers(-(2**15), 2**15, size=(7, 50)).astype(np.int64)
    values = [secrets.randbits(61) - 2**60 for _ in range(50)]
    expected = [sum(int(w) * v for w, v in zip(row, values, strict=True)) for row in weights]
    assert exact_matvec(weights, values) == expected
    wide = weights * 2**20  # wide weights (folded masks): narrower limbs, more of them
    assert exact_matvec(wide, values) == [e * 2**20 for e in expected]
    widest = weights * 2**40  # rows near int64 on their own: the Python-int path
    assert exact_matvec(widest, values) == [e * 2**40 for e in expected]
    assert exact_matvec(weights, [2**62 + 1] * 50) == [
        int(row.sum()) * (2**62 + 1) for row in weights
    ]
    # B's answers y + t: a hundred bits and more, of either sign
    answers = [secrets.randbits(140) - 2**100 for _ in range(50)]
    assert exact_matvec(wide, answers) == [
        sum(int(w) * v for w, v in zip(row, answers, strict=True)) for row in wide
    ]
    assert exact_matvec(weights[:, :0], []) == [0] * 7


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_folded_weights_undo_the_divisors_with_the_plans_own_weights(data: st.DataObject) -> None:
    """E = W_q · diag(c): W_q the plan's quantization whatever the masks, c_j the rounded
    2^F / D_j, and E within c_j / 2 + |W| 2^f / 2 of W 2^(f + F) / D."""
    power = data.draw(st.sampled_from([1, 2]))
    fold_bits = 16 * power + FOLD_PRECISION_BITS
    rows, cols = data.draw(st.integers(1, 6)), data.draw(st.integers(1, 6))
    seed = data.draw(st.integers(0, 2**32 - 1))
    weight = np.random.default_rng(seed).normal(size=(rows, cols))
    frac = data.draw(st.integers(4, 14))
    divisors = [d**power for d in mask_multipliers(cols, 8, 8)]
    folded = fold_weights(weight, frac, fold_bits, divisors)
    np.testing.assert_array_equal(folded.small, quantize(weight, frac))
    for c, d in zip(folded.scales, divisors, strict=True):
        assert abs(c * d - 2**fold_bits) <= d / 2  # c_j = round(2^F / D_j)
    np.testing.assert_array_equal(folded.full, folded.small * np.array(folded.scales))
    exact = weight * 2.0 ** (frac + fold_bits) / np.array(divisors, dtype=np.float64)[None, :]
    bound = np.array(folded.scales)[None, :] / 2 + np.abs(weight) * 2.0**frac / 2
    assert np.all(np.abs(folded.full - exact) <= bound * (1 + 1e-9))
    plain = fold_weights(weight, frac, 0, None)
    np.testing.assert_array_equal(plain.full, quantize(weight, frac))
    assert plain.scales == (1,) * cols


def test_fold_weights_refuses_divisors_past_the_fold() -> None:
    weight = np.ones((2, 2))
    with pytest.raises(ValueError, match="divisors"):
        fold_weights(weight, 8, 16, [3, 2**16 + 1])
    with pytest.raises(ValueError, match="2 inputs"):
        fold_weights(weight, 8, 16, [3])
