"""Integer numerics shared by model server A, key server B and the plaintext simulator.

Scales are powers of two: an integer v at scale s stands for v / 2^s. The functions here
are the single definition of every rounding in the protocol, so that the simulator in
:mod:`ppinfer.plan` predicts A and B exactly. Masks and permutations come from the OS
CSPRNG (``secrets``).
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from ppinfer.errors import PlaintextOverflowError

__all__ = [
    "additive_masks",
    "bits_for",
    "fold_weights",
    "mask_multipliers",
    "quantize",
    "quantize_exact",
    "random_permutation",
    "rescale",
]

#: Weights are folded into int64 arrays; anything wider means the plan is misconfigured.
_INT64_LIMIT = 2**62


def bits_for(bound: float) -> int:
    """The smallest b with bound < 2^b (at least 1)."""
    return max(1, math.floor(math.log2(bound)) + 1) if bound >= 1 else 1


def rescale(value: int, shift: int) -> int:
    """round(value * 2^shift) for integer shift, rounding halves up."""
    if shift >= 0:
        return value << shift
    return (value + (1 << (-shift - 1))) >> -shift


def quantize(values: npt.NDArray[np.float64], frac_bits: int) -> npt.NDArray[np.int64]:
    """round(values * 2^frac_bits) as int64, refusing anything that would not fit."""
    scaled = np.rint(np.asarray(values, dtype=np.float64) * 2.0**frac_bits)
    if scaled.size and float(np.max(np.abs(scaled))) >= _INT64_LIMIT:
        raise PlaintextOverflowError(
            f"quantizing at 2^{frac_bits} exceeds int64; lower the weight bits of this layer"
        )
    return scaled.astype(np.int64)


def quantize_exact(values: npt.NDArray[np.float64], frac_bits: int) -> list[int]:
    """round(values * 2^frac_bits) as exact Python integers, for scales past int64 (biases)."""
    return [round(Fraction(float(v)) * 2**frac_bits) for v in np.ravel(values)]


def fold_weights(
    weight: npt.NDArray[np.float64],
    frac_bits: int,
    divisors: Sequence[int] | None,
) -> npt.NDArray[np.int64]:
    """round(W_ij * 2^frac_bits / divisors_j): the next layer undoing multiplicative masks."""
    if divisors is None:
        return quantize(weight, frac_bits)
    scaled = weight * (2.0**frac_bits / np.asarray(divisors, dtype=np.float64))[None, :]
    return quantize(scaled, 0)


def mask_multipliers(count: int, min_bits: int, spread_bits: int) -> list[int]:
    """Positive multiplicative masks d, log-uniform over [2^min_bits, 2^(min_bits+spread_bits)).

    The bit length is uniform over the spread, then d is uniform among numbers of that
    length, so magnitudes are hidden up to a factor 2^spread_bits.
    """
    masks = []
    for _ in range(count):
        length = min_bits + 1 + secrets.randbelow(spread_bits)
        masks.append((1 << (length - 1)) + secrets.randbelow(1 << (length - 1)))
    return masks


def random_permutation(count: int) -> list[int]:
    """A uniform permutation of range(count) (Fisher-Yates on the OS CSPRNG)."""
    order = list(range(count))
    for i in range(count - 1, 0, -1):
        j = secrets.randbelow(i + 1)
        order[i], order[j] = order[j], order[i]
    return order


def additive_masks(count: int, bits: int) -> list[int]:
    """Statistical masks s uniform in [0, 2^bits)."""
    return [secrets.randbits(bits) for _ in range(count)]


#: Bits of the low limb in :func:`exact_matvec`.
_LIMB_BITS = 31


def exact_matvec(weights: npt.NDArray[np.int64], values: Sequence[int]) -> list[int]:
    """W·v in exact integers, for values up to 2^62 in magnitude (masked inputs).

    Each value is split into a high and a low 31-bit limb, each product taken in int64
    (no overflow while every row's sum of |w| stays below 2^31); beyond that, Python ints.
    """
    if weights.shape[1] != len(values):
        raise ValueError(f"weights {weights.shape} do not match {len(values)} values")
    largest_row = int(np.abs(weights).sum(axis=1).max()) if weights.size else 0
    if largest_row >= 2**_LIMB_BITS or any(abs(v) >= 2**62 for v in values):
        product = weights.astype(object) @ np.array(values, dtype=object)
        return [int(v) for v in product]
    low_mask = (1 << _LIMB_BITS) - 1
    low = np.array([v & low_mask for v in values], dtype=np.int64)
    high = np.array([v >> _LIMB_BITS for v in values], dtype=np.int64)
    return [
        (int(h) << _LIMB_BITS) + int(lo)
        for h, lo in zip(weights @ high, weights @ low, strict=True)
    ]
