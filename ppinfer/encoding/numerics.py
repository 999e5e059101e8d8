"""Integer numerics shared by model server A, key server B and the plaintext simulator.

Scales are powers of two: an integer v at scale s stands for v / 2^s. The functions here
are the single definition of every rounding in the protocol, so that the simulator in
:mod:`ppinfer.compiler.simulator` predicts A and B exactly. The per-inference randomness
(masks, permutations, multipliers) is the protocol's: :mod:`ppinfer.encoding.masks`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import numpy.typing as npt

from ppinfer.errors import PlaintextOverflowError

__all__ = [
    "FOLD_PRECISION_BITS",
    "MAX_MASK_BITS",
    "MIN_MASK_SIGMA",
    "SEALED_FRAC_BITS",
    "FoldedWeights",
    "bits_for",
    "fold_weights",
    "quantize",
    "quantize_exact",
    "reduce_sealed",
    "rescale",
]

#: u = x^ + r must fit int64: r below 2^62 and |x^| below 2^(62 - sigma) leave room.
MAX_MASK_BITS = 62
#: The least statistical security of any additive mask: the distance between a masked
#: value and a uniform one is at most 2^-sigma (docs/PROTOCOL.md section 7).
MIN_MASK_SIGMA = 40
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


#: Bits of precision, beyond the multiplicative masks' own, of the factors c_j that undo
#: them: c_j = round(2^(p·max_bits + FOLD_PRECISION_BITS) / d_j^p) is within a relative
#: 2^-(FOLD_PRECISION_BITS + 1) of exact, whatever d_j.
FOLD_PRECISION_BITS = 16


@dataclass(frozen=True)
class FoldedWeights:
    """A layer's integer weights E = ``small`` · diag(``scales``): ``small`` is the plan's
    own quantization round(W · 2^frac_bits), the same for every request, and ``scales``
    the factors c_j that undo each input's multiplicative mask. The homomorphic side
    raises input j's ciphertext to c_j and multiplies by the narrow ``small``; the
    plaintext side uses :attr:`full`."""

    small: npt.NDArray[np.int64]
    scales: tuple[int, ...]

    @property
    def full(self) -> npt.NDArray[np.int64]:
        return self.small * np.asarray(self.scales, dtype=np.int64)[None, :]


def fold_weights(
    weight: npt.NDArray[np.float64],
    frac_bits: int,
    fold_bits: int,
    divisors: Sequence[int] | None,
) -> FoldedWeights:
    """E_ij = round(W_ij · 2^frac_bits) · c_j ≈ W_ij · 2^(frac_bits + fold_bits) / D_j,
    with c_j = round(2^fold_bits / D_j) (halves up), D_j = 1 without divisors: the next
    layer undoing multiplicative masks. E_ij is off by at most c_j / 2 (the weight's
    rounding) plus |W_ij| · 2^frac_bits / 2 (the factor's)."""
    small = quantize(weight, frac_bits)
    inputs = weight.shape[1]
    if divisors is None:
        divisors = [1] * inputs
    if len(divisors) != inputs:
        raise ValueError(f"{len(divisors)} divisors for {inputs} inputs")
    if min(divisors, default=1) < 1 or max(divisors, default=1) > 1 << fold_bits:
        raise ValueError(f"divisors must lie in [1, 2^{fold_bits}]")
    scales = tuple(((1 << fold_bits) + d // 2) // d for d in divisors)
    largest = int(np.max(np.abs(small), initial=0)) * max(scales, default=1)
    if largest >= _INT64_LIMIT:
        raise PlaintextOverflowError(
            f"folded weights reach 2^{largest.bit_length()}, past int64; lower the weight bits"
        )
    return FoldedWeights(small, scales)


#: Fractional bits of the logits the client gets in the two-server mode. A's output scale
#: carries every layer's scales (about 60 bits on W1); B floors A's masked outputs to this
#: scale before sealing, so the client's error is below 2^-SEALED_FRAC_BITS.
SEALED_FRAC_BITS = 24


def reduce_sealed(value: int, shift: int, modulus_bits: int) -> int:
    """floor(value / 2^shift) mod 2^modulus_bits: what B seals of o + s, and what A gives
    the client of its mask s. Their difference mod 2^modulus_bits, read as signed, is
    floor(o / 2^shift) or one more, when |o| < 2^(modulus_bits - 2 + shift)."""
    return (value >> shift) & ((1 << modulus_bits) - 1)


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
