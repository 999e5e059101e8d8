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

gmpy2 holds the GIL while it multiplies, so threads cannot share this work: a layer
whose estimated cost passes :data:`PARALLEL_MIN_MULTIPLICATIONS` is split by rows over a
pool of worker processes, one per core (started once, with ``forkserver``: never a fork
of a process running gRPC threads). Ciphertexts and weights go to the workers by pickle
inside this process tree only; nothing from the network is unpickled. If a worker dies
the layer is computed in this process and the pool is started again.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache

import gmpy2
import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.paillier.keys import PublicKey
from ppinfer.paillier.ops import add_plain

__all__ = [
    "MAX_DIGIT_BITS",
    "PARALLEL_MIN_MULTIPLICATIONS",
    "best_digit_bits",
    "linear",
    "row_cost",
]

#: Below this many estimated multiplications a layer stays in the calling process: the
#: pickling and the hand-off would cost more than the second core saves.
PARALLEL_MIN_MULTIPLICATIONS = 20_000
_WORKERS = os.cpu_count() or 1
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()

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


def _rows(nsquare: mpz, rows: list[tuple[list[mpz], npt.NDArray[np.int64]]]) -> list[mpz]:
    """Products of several rows: (bases, magnitudes) each; what a worker process runs."""
    return [_row(bases, magnitudes, nsquare) if bases else mpz(1) for bases, magnitudes in rows]


def _process_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            context = multiprocessing.get_context("forkserver")
            _pool = ProcessPoolExecutor(max_workers=_WORKERS, mp_context=context)
        return _pool


def _restart_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def _products(
    nsquare: mpz, rows: list[tuple[list[mpz], npt.NDArray[np.int64]]], cost: int, workers: int
) -> list[mpz]:
    if workers < 2 or cost < PARALLEL_MIN_MULTIPLICATIONS or len(rows) < 2:
        return _rows(nsquare, rows)
    # Contiguous slices of about equal cost, one per worker.
    weights = np.cumsum([len(bases) for bases, _ in rows])
    cuts = np.searchsorted(weights, np.linspace(0, weights[-1], workers + 1)[1:-1])
    bounds = sorted({0, len(rows), *(min(len(rows), int(c) + 1) for c in cuts)})
    slices = [rows[lo:hi] for lo, hi in itertools.pairwise(bounds)]
    try:
        pool = _process_pool()
        futures = [pool.submit(_rows, nsquare, part) for part in slices]
        return [product for future in futures for product in future.result()]
    except BrokenProcessPool:
        _restart_pool()
        return _rows(nsquare, rows)


def linear(
    public: PublicKey,
    inputs: Sequence[mpz],
    weights: npt.NDArray[np.int64],
    bias: Sequence[int],
    workers: int | None = None,
) -> list[mpz]:
    """Enc(W x + b) for int64 weights [outputs, inputs] and signed integer biases;
    ``workers`` processes share a large layer (default: one per core)."""
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
    rows: list[tuple[list[mpz], npt.NDArray[np.int64]]] = []
    cost = 0
    for row in weights:
        columns = np.flatnonzero(row)
        values = row[columns]
        bases = [
            inputs[i] if w > 0 else inverses[i]
            for i, w in zip(columns.tolist(), values.tolist(), strict=True)
        ]
        magnitudes = np.abs(values)
        rows.append((bases, magnitudes))
        if bases:
            bits = int(magnitudes.max()).bit_length()
            cost += row_cost(len(bases), bits, best_digit_bits(len(bases), bits))
    products = _products(nsquare, rows, cost, _WORKERS if workers is None else workers)
    return add_plain(public, products, bias)
