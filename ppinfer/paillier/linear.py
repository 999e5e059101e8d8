"""Enc(W x + b) from Enc(x) with small signed integer weights: model server A's hot path.

Only non-zero weights cost anything, so convolutions lowered to a matrix pay for their
kernel taps, not for the whole matrix. Each input ciphertext is raised to the non-zero
weights of its column in one ``gmpy2.powmod_exp_list`` call (which releases the GIL, so
columns split over threads run on several cores); a negative weight raises the inverse
of the ciphertext, computed once per input that needs it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import gmpy2
import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.paillier.keys import PublicKey
from ppinfer.paillier.ops import add_plain

__all__ = ["linear"]

_WORKERS = max(1, min(4, os.cpu_count() or 1))
_EXECUTOR = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="ppinfer-linear")
#: Below this many weights, threads cost more than they save.
_PARALLEL_MIN_WEIGHTS = 4096


def _partial_products(
    public: PublicKey, inputs: Sequence[mpz], columns: npt.NDArray[np.int64], outputs: int
) -> list[mpz]:
    nsquare = public.nsquare
    acc = [mpz(1)] * outputs
    for ciphertext, column in zip(inputs, columns, strict=True):
        for base, rows in (
            (ciphertext, np.flatnonzero(column > 0)),
            (None, np.flatnonzero(column < 0)),
        ):
            if not rows.size:
                continue
            if base is None:
                base = gmpy2.invert(ciphertext, nsquare)
            exponents = np.abs(column[rows]).tolist()
            powers = gmpy2.powmod_exp_list(base, exponents, nsquare)
            for row, power in zip(rows.tolist(), powers, strict=True):
                acc[row] = acc[row] * power % nsquare
    return acc


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
    columns = np.ascontiguousarray(weights.T, dtype=np.int64)  # one row per input ciphertext
    nsquare = public.nsquare
    if np.count_nonzero(columns) >= _PARALLEL_MIN_WEIGHTS and _WORKERS > 1:
        bounds = np.linspace(0, count, _WORKERS + 1, dtype=int)
        futures = [
            _EXECUTOR.submit(_partial_products, public, inputs[lo:hi], columns[lo:hi], outputs)
            for lo, hi in itertools.pairwise(bounds)
            if hi > lo
        ]
        acc = [mpz(1)] * outputs
        for future in futures:
            acc = [a * p % nsquare for a, p in zip(acc, future.result(), strict=True)]
    else:
        acc = _partial_products(public, inputs, columns, outputs)
    return add_plain(public, acc, bias)
