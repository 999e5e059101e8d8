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


#: Bits an int64 product sum may use in :func:`exact_matvec`.
_INT64_BITS = 62


def exact_matvec(weights: npt.NDArray[np.int64], values: Sequence[int]) -> list[int]:
    """W·v in exact integers, for integer values of any size (masked inputs and answers).

    Each value is split into limbs narrow enough that a row's sum of |w|·limb fits int64,
    one int64 product per limb, recombined in Python integers. Rows whose weights alone
    come near int64 fall back to Python integers throughout.
    """
    if weights.shape[1] != len(values):
        raise ValueError(f"weights {weights.shape} do not match {len(values)} values")
    if not values:
        return [0] * weights.shape[0]
    largest_row = int(np.abs(weights).sum(axis=1).max()) if weights.size else 0
    limb_bits = _INT64_BITS - largest_row.bit_length()
    if limb_bits < 8:
        product = weights.astype(object) @ np.array(values, dtype=object)
        return [int(v) for v in product]
    width = max(int(v).bit_length() for v in values) + 1  # with the sign
    limbs = -(-width // limb_bits)
    mask = (1 << limb_bits) - 1
    # v = sum_i limb_i 2^(limb_bits i): low limbs unsigned, the top one signed
    split = np.array(
        [
            [(v >> (limb_bits * i)) & mask for i in range(limbs - 1)]
            + [v >> (limb_bits * (limbs - 1))]
            for v in values
        ],
        dtype=np.int64,
    )
    partial = (weights @ split).tolist()
    return [sum(p << (limb_bits * i) for i, p in enumerate(row)) for row in partial]
