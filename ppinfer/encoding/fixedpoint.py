"""Fixed-point encoding of real tensors, and the signed view of Paillier plaintexts.

A real v travels as the integer round(v * 2^frac_bits). Every encoding declares its
range: |round(v * 2^frac_bits)| < 2^value_bits. A value outside it, or NaN/inf, is an
error, never a silent wrap-around. Plaintexts in Z_n are read as signed: residues above
n/2 are negative. This module needs numpy only (it is on the client path).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ppinfer.errors import EncodingRangeError, PlaintextOverflowError

__all__ = ["INT64_VALUE_BITS", "FixedPoint", "residue_to_signed", "signed_to_residue"]

#: Widest declared range an int64 tensor can carry (|v| < 2^62 leaves headroom for masks).
INT64_VALUE_BITS = 62


@dataclass(frozen=True)
class FixedPoint:
    """A fixed-point format: ``frac_bits`` fractional bits, integers bounded by 2^value_bits."""

    frac_bits: int
    value_bits: int

    def __post_init__(self) -> None:
        if not 0 <= self.frac_bits < self.value_bits:
            raise ValueError(
                f"frac_bits must be in [0, value_bits); got frac_bits={self.frac_bits}, "
                f"value_bits={self.value_bits}"
            )
        if self.value_bits > INT64_VALUE_BITS:
            raise ValueError(
                f"value_bits={self.value_bits} does not fit an int64 tensor; "
                f"use at most {INT64_VALUE_BITS}"
            )

    @property
    def scale(self) -> float:
        """2^frac_bits, the factor between a real value and its integer."""
        return float(2**self.frac_bits)

    @property
    def max_abs_real(self) -> float:
        """The largest float |v| that encodes; values beyond it are refused.

        Past 53 value bits, 2^value_bits - 1 is not a float64 and rounds up to the
        bound itself, so the largest float below the bound is taken instead."""
        top = float(2**self.value_bits - 1)
        if top >= 2**self.value_bits:
            top = float(np.nextafter(top, 0.0))
        return top / self.scale

    def encode(self, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """round(values * 2^frac_bits) as int64, refusing NaN, inf and out-of-range values."""
        real = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(real)):
            bad = int(np.count_nonzero(~np.isfinite(real)))
            raise EncodingRangeError(f"input holds {bad} NaN or infinite value(s); clean it first")
        scaled = np.rint(real * self.scale)
        limit = float(2**self.value_bits)
        outside = np.abs(scaled) >= limit
        if np.any(outside):
            worst = float(real.flat[int(np.argmax(np.abs(real)))])
            raise EncodingRangeError(
                f"{int(np.count_nonzero(outside))} value(s) outside the declared range "
                f"|v| <= {self.max_abs_real:g} (largest |v| is {abs(worst):g}); "
                f"rescale the input or declare more value bits"
            )
        return scaled.astype(np.int64)

    def decode(self, integers: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The real values of fixed-point integers (no range check: decoding cannot overflow)."""
        return np.asarray(integers, dtype=np.float64) / self.scale


def signed_to_residue(values: Iterable[int], n: int) -> list[int]:
    """Map signed integers into Z_n; each must satisfy |v| < n/2 (checked)."""
    half = n // 2
    residues = []
    for value in values:
        v = int(value)
        if not -half < v < half:
            raise PlaintextOverflowError(
                f"plaintext of {v.bit_length()} bits does not fit the signed range of a "
                f"{n.bit_length()}-bit key; lower the fixed-point scale or the weight bits"
            )
        residues.append(v % n)
    return residues


def residue_to_signed(residues: Iterable[int], n: int) -> list[int]:
    """Read residues of Z_n as signed integers: those above n/2 are negative."""
    half = n // 2
    return [int(r) - n if r > half else int(r) for r in residues]
