"""Enc(W x + b) from Enc(x) with small signed integer weights: model server A's hot path.

Each output is a multi-exponentiation prod_i c_i^(w_i) mod n^2. Raising every c_i to its
weight costs about 1.5 multiplications per weight bit (a 16-bit weight: ~25). Instead
each row is computed with the bucket method, digit by digit in base 2^b (from the top
digit down):

- every input whose weight has digit v at this position goes into bucket v (one
  multiplication);
- sum_v v * bucket_v costs two multiplications per bucket value (running products);
- b squarings move the result up one digit.

A row of k non-zero weights of m bits costs about k * ceil(m / b) + ceil(m / b) *
2^(b+1) multiplications; :func:`row_cost` picks b per row. Dense rows of a few hundred
weights land near 3 multiplications per 16-bit weight; a convolution row of 25 taps near
9. Only non-zero weights cost anything; a negative weight uses the inverse of its input,
computed once per input that needs it.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import gmpy2
import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.paillier.keys import PublicKey
from ppinfer.paillier.ops import add_plain

__all__ = ["MAX_DIGIT_BITS", "best_digit_bits", "linear", "row_cost"]

#: Largest digit: 2^8 buckets per digit position is already past the best for any row
#: shorter than a few thousand weights.
MAX_DIGIT_BITS = 8


def row_cost(nonzero: int, magnitude_bits: int, digit_bits: int) -> int:
    """Modular multiplications (and squarings) one row costs with ``digit_bits`` digits."""
    digits = -(-magnitude_bits // digit_bits)
    return digits * (nonzero + 2 * ((1 << digit_bits) - 1)) + (digits - 1) * digit_bits


@lru_cache(maxsize=4096)
def best_digit_bits(nonzero: int, magnitude_bits: int) -> int:
    """The digit size that makes a row of ``nonzero`` weights of ``magnitude_bits`` cheapest."""
    return min(range(1, MAX_DIGIT_BITS + 1), key=lambda b: row_cost(nonzero, magnitude_bits, b))


def _row(bases: list[mpz], magnitudes: npt.NDArray[np.int64], nsquare: mpz) -> mpz:
    """prod bases[i] ^ magnitudes[i] mod n^2 by the bucket method (all magnitudes >= 1)."""
    bits = int(magnitudes.max()).bit_length()
    digit_bits = best_digit_bits(len(bases), bits)
    mask = (1 << digit_bits) - 1
    result: mpz | None = None
    for position in reversed(range(-(-bits // digit_bits))):
        digits = ((magnitudes >> (position * digit_bits)) & mask).tolist()
        buckets: list[mpz | None] = [None] * (mask + 1)
        for base, digit in zip(bases, digits, strict=True):
            if digit:
                held = buckets[digit]
                buckets[digit] = base if held is None else held * base % nsquare
        running: mpz | None = None
        total: mpz | None = None
        for value in range(mask, 0, -1):  # sum_v v * bucket_v = sum of running products
            bucket = buckets[value]
            if bucket is not None:
                running = bucket if running is None else running * bucket % nsquare
            if running is not None:
                total = running if total is None else total * running % nsquare
        if result is not None:
            result = gmpy2.powmod(result, 1 << digit_bits, nsquare)
            if total is not None:
                result = result * total % nsquare
        else:
            result = total
    return mpz(1) if result is None else result


def linear(
    public: PublicKey,
    inputs: Sequence[mpz],
    weights: npt.NDArray[np.int64],
    bias: Sequence[int],
) -> list[mpz]:
    """Enc(W x + b) for int64 weights [outputs, inputs] and signed integer biases."""
    outputs, count = weights.shape
    if count != len(inputs) or len(bias) != outputs:
        raise ValueError(
            f"weights {weights.shape} do not match {len(inputs)} inputs and {len(bias)} biases"
        )
    nsquare = public.nsquare
    weights = np.asarray(weights, dtype=np.int64)
    needs_inverse = np.flatnonzero((weights < 0).any(axis=0)).tolist()
    inverses = dict(
        zip(needs_inverse, (gmpy2.invert(inputs[i], nsquare) for i in needs_inverse), strict=True)
    )
    products = []
    for row in weights:
        columns = np.flatnonzero(row)
        if not columns.size:
            products.append(mpz(1))
            continue
        values = row[columns]
        bases = [
            inputs[i] if w > 0 else inverses[i]
            for i, w in zip(columns.tolist(), values.tolist(), strict=True)
        ]
        products.append(_row(bases, np.abs(values), nsquare))
    return add_plain(public, products, bias)
