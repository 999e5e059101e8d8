"""Enc(W x + b) from Enc(x) with small signed integer weights: model server A's hot path.

Each output is a multi-exponentiation prod_i c_i^(w_i) mod n^2. Raising every c_i to its
weight costs about 1.5 multiplications per weight bit (a 16-bit weight: ~25). Two
methods do better, and a cost model picks one per layer from its shape:

- **Buckets, per row** (long rows: dense layers over many inputs). Digit by digit in
  base 2^b from the top: every input whose weight has digit v goes into bucket v (one
  multiplication); sum_v v * bucket_v costs two multiplications per bucket value; b
  squarings move the result up one digit. A row of k non-zero weights of m bits costs
  about k * ceil(m / b) + ceil(m / b) * 2^(b+1) multiplications; :func:`row_cost` picks
  b per row. Dense rows of a few hundred weights land near 3 multiplications per 16-bit
  weight and 1.3 per 8-bit weight. A negative weight uses the inverse of its input,
  computed once per input.
- **Tables, per input, shared by all rows** (short rows over inputs that many rows
  share: convolutions, and short rows of wide weights). Each input's powers
  c^1 .. c^(2^b - 1) are computed once (2^b - 2 multiplications) and serve every row
  that uses the input; a row then walks its digits from the top (Straus):
  b squarings per digit, one table multiplication per non-zero digit, positive and
  negative weights in two products, the negative one inverted once at the end. A row
  costs about k * ceil(m / b) + 2 * m multiplications and one inversion.

The functions here are what a worker process runs (:mod:`ppinfer.paillier.worker_pool`);
:mod:`ppinfer.paillier.linear` splits a layer over them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import gmpy2
import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.paillier.ops import horner_pack

__all__ = [
    "MAX_DIGIT_BITS",
    "BucketRow",
    "LayerMethod",
    "TableRow",
    "best_digit_bits",
    "bucket_rows",
    "choose_method",
    "horner_batches",
    "invert_all",
    "raise_each",
    "row_cost",
    "table_row_cost",
    "table_rows",
]

#: Largest digit: 2^8 buckets (or table entries) per digit is already past the best for
#: any row shorter than a few thousand weights.
MAX_DIGIT_BITS = 8
#: An inversion mod n^2 in multiplications (extended gcd on 4096-bit numbers), for the
#: cost model only.
_INVERSION_COST = 8

#: A row as the bucket method takes it: its bases (inverses for negative weights) and
#: the magnitudes of its non-zero weights.
BucketRow = tuple[list[mpz], npt.NDArray[np.int64]]
#: A row as the table method takes it: input indices and signed non-zero weights.
TableRow = tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]


def row_cost(nonzero: int, magnitude_bits: int, digit_bits: int) -> int:
    """Modular multiplications (and squarings) one row costs with ``digit_bits`` buckets."""
    digits = -(-magnitude_bits // digit_bits)
    return digits * (nonzero + 2 * ((1 << digit_bits) - 1)) + (digits - 1) * digit_bits


@lru_cache(maxsize=4096)
def best_digit_bits(nonzero: int, magnitude_bits: int) -> int:
    """The bucket size that makes a row of ``nonzero`` weights of ``magnitude_bits`` cheapest."""
    return min(range(1, MAX_DIGIT_BITS + 1), key=lambda b: row_cost(nonzero, magnitude_bits, b))


def table_row_cost(nonzero: int, magnitude_bits: int, digit_bits: int) -> int:
    """Multiplications one row costs with shared tables of ``digit_bits`` (tables apart)."""
    digits = -(-magnitude_bits // digit_bits)
    return digits * nonzero + 2 * (digits - 1) * digit_bits + _INVERSION_COST


@dataclass(frozen=True)
class LayerMethod:
    """How a layer is computed: ``"buckets"`` (digit size per row) or ``"tables"`` (one
    digit size for the layer); ``cost``: estimated multiplications on the busiest core."""

    name: str
    digit_bits: int
    cost: int


def choose_method(weights: npt.NDArray[np.int64], workers: int = 1) -> LayerMethod:
    """The cheaper method for ``weights`` over ``workers`` cores, by the cost model. With
    tables, each worker builds the tables of the inputs its rows use (counted in full)."""
    magnitudes = np.abs(weights)
    nonzero = np.count_nonzero(weights, axis=1).tolist()
    bits = [int(m).bit_length() for m in magnitudes.max(axis=1, initial=0).tolist()]
    rows = [(k, m) for k, m in zip(nonzero, bits, strict=True) if k]
    buckets = sum(row_cost(k, m, best_digit_bits(k, m)) for k, m in rows)
    best = LayerMethod("buckets", 0, -(-buckets // max(1, workers)))
    used = int(np.count_nonzero(magnitudes.any(axis=0)))
    for digit_bits in range(1, MAX_DIGIT_BITS + 1):
        per_rows = sum(table_row_cost(k, m, digit_bits) for k, m in rows)
        tables = used * ((1 << digit_bits) - 2)
        cost = tables + -(-per_rows // max(1, workers))
        if cost < best.cost:
            best = LayerMethod("tables", digit_bits, cost)
    return best


def _bucket_row(bases: list[mpz], magnitudes: npt.NDArray[np.int64], nsquare: mpz) -> mpz:
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


def bucket_rows(nsquare: mpz, rows: list[BucketRow]) -> list[mpz]:
    """Products of several rows by buckets: what a worker process runs."""
    return [
        _bucket_row(bases, magnitudes, nsquare) if bases else mpz(1) for bases, magnitudes in rows
    ]


def table_rows(
    nsquare: mpz, inputs: dict[int, mpz], rows: list[TableRow], digit_bits: int
) -> list[mpz]:
    """Products of several rows with per-input tables built once for all of them."""
    tables: dict[int, list[mpz]] = {}
    mask = (1 << digit_bits) - 1
    shift = 1 << digit_bits
    products = []
    for columns, weights in rows:
        if not columns.size:
            products.append(mpz(1))
            continue
        for j in columns.tolist():
            if j not in tables:
                base = inputs[j]
                powers = [mpz(1), base]
                for _ in range(2, shift):
                    powers.append(powers[-1] * base % nsquare)
                tables[j] = powers
        row_tables = [tables[j] for j in columns.tolist()]
        negative = (weights < 0).tolist()
        magnitudes = np.abs(weights)
        bits = int(magnitudes.max()).bit_length()
        held: list[mpz | None] = [None, None]  # positive weights, negative weights
        for position in reversed(range(-(-bits // digit_bits))):
            for side in (0, 1):
                if held[side] is not None:
                    held[side] = gmpy2.powmod(held[side], shift, nsquare)
            digits = ((magnitudes >> (position * digit_bits)) & mask).tolist()
            for table, digit, side in zip(row_tables, digits, negative, strict=True):
                if digit:
                    current = held[side]
                    held[side] = (
                        table[digit] if current is None else current * table[digit] % nsquare
                    )
        positive, inverted = held
        product = mpz(1) if positive is None else positive
        if inverted is not None:
            product = product * gmpy2.invert(inverted, nsquare) % nsquare
        products.append(product)
    return products


def invert_all(values: Sequence[mpz], modulus: mpz) -> list[mpz]:
    """Every value's inverse mod ``modulus`` with one inversion and 3 (k - 1)
    multiplications (Montgomery's trick); ZeroDivisionError if one has none."""
    if not values:
        return []
    prefix = [mpz(values[0])]
    for value in values[1:]:
        prefix.append(prefix[-1] * value % modulus)
    inverse = gmpy2.invert(prefix[-1], modulus)
    inverses: list[mpz] = [mpz(0)] * len(values)
    for i in range(len(values) - 1, 0, -1):
        inverses[i] = inverse * prefix[i - 1] % modulus
        inverse = inverse * values[i] % modulus
    inverses[0] = inverse
    return inverses


def raise_each(nsquare: mpz, ciphertexts: list[mpz], exponents: list[int]) -> list[mpz]:
    """c_i^(e_i) mod n^2 for every pair: what a worker process runs."""
    pairs = zip(ciphertexts, exponents, strict=True)
    return [c if e == 1 else gmpy2.powmod(c, e, nsquare) for c, e in pairs]


def horner_batches(
    nsquare: mpz, batches: list[tuple[list[mpz], list[int] | None]], slot_bits: int
) -> list[mpz]:
    """Several packed ciphertexts without their offsets: what a worker process runs."""
    return [horner_pack(nsquare, values, scales, slot_bits) for values, scales in batches]
