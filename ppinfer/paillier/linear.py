"""Enc(W x + b) from Enc(x) with small signed integer weights: model server A's hot path.

Weights are shifted by an offset so every exponent is non-negative (a negative one would
cost an inversion mod n^2 each); the offset is taken back once per layer with
Enc(sum x)^(-offset). Each input ciphertext is raised to its whole column of weights in
one ``gmpy2.powmod_exp_list`` call, which releases the GIL, so columns split over threads
run on several cores.
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
        powers = gmpy2.powmod_exp_list(ciphertext, column.tolist(), nsquare)
        acc = [a * p % nsquare for a, p in zip(acc, powers, strict=True)]
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
    offset = max(0, -int(weights.min())) if weights.size else 0
    columns = (weights.astype(np.int64) + offset).T  # one row per input ciphertext
    nsquare = public.nsquare
    if weights.size >= _PARALLEL_MIN_WEIGHTS and _WORKERS > 1:
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
    if offset:
        total = mpz(1)
        for ciphertext in inputs:
            total = total * ciphertext % nsquare
        correction = gmpy2.powmod(total, -offset, nsquare)
        acc = [a * correction % nsquare for a in acc]
    return add_plain(public, acc, bias)
