"""Enc(W x + b) from Enc(x) with small signed integer weights: model server A's hot path.

Each output is a multi-exponentiation prod_i c_i^(w_i) mod n^2, computed by buckets or
by shared tables, whichever :func:`~ppinfer.paillier.multiexp.choose_method`'s cost model
finds cheaper for the layer's shape (:mod:`ppinfer.paillier.multiexp` has both).

A layer whose estimated cost passes :data:`PARALLEL_MIN_MULTIPLICATIONS` is split by
rows over the caller's :class:`~ppinfer.paillier.worker_pool.WorkerPool` (without one,
everything runs in this process); with tables, each worker builds the tables of the
inputs its rows use. The same workers pack the inputs of activation stages
(:func:`pack_scaled`), batch by batch, and raise inputs to the factors that undo a
stage's masks (:func:`scale_inputs`). :func:`submit_linear` queues a layer without
waiting, so that several layers keep every core busy while this process prepares the
next (the inverses for negative weights: one inversion per layer, by Montgomery's trick).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.encoding.packing import SlotLayout
from ppinfer.paillier.keys import PublicKey
from ppinfer.paillier.multiexp import (
    BucketRow,
    LayerMethod,
    TableRow,
    bucket_rows,
    choose_method,
    horner_batches,
    invert_all,
    raise_each,
    table_rows,
)
from ppinfer.paillier.ops import add_plain
from ppinfer.paillier.worker_pool import Pending, WorkerPool, done

__all__ = [
    "PARALLEL_MIN_MULTIPLICATIONS",
    "SPLIT_MIN_MULTIPLICATIONS",
    "Pending",
    "linear",
    "pack_scaled",
    "scale_inputs",
    "submit_linear",
]

#: Below this many estimated multiplications a layer stays in the calling process: the
#: pickling and the hand-off would cost more than the second core saves.
PARALLEL_MIN_MULTIPLICATIONS = 20_000
#: The same for jobs that send each worker only its own ciphertexts (scaling inputs,
#: packing stage inputs): their hand-off is cheap, so they split from here.
SPLIT_MIN_MULTIPLICATIONS = 5_000


def _slices(sizes: Sequence[int], workers: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of about equal total size, one per worker."""
    weights = np.cumsum(sizes)
    cuts = np.searchsorted(weights, np.linspace(0, weights[-1], workers + 1)[1:-1])
    bounds = sorted({0, len(sizes), *(min(len(sizes), int(c) + 1) for c in cuts)})
    return list(itertools.pairwise(bounds))


def _spread(
    pool: WorkerPool,
    task: Callable[..., list[mpz]],
    parts: list[tuple[Any, ...]],
    serial: tuple[Any, ...],
) -> list[mpz]:
    """:meth:`WorkerPool.submit`, waited for."""
    return pool.submit(task, parts, serial)()


def _workers(pool: WorkerPool | None, workers: int | None) -> int:
    """How many processes share a job: the pool's (at most ``workers``), or 1 without one."""
    if pool is None:
        return 1
    return pool.workers if workers is None else min(workers, pool.workers)


def linear(
    public: PublicKey,
    inputs: Sequence[mpz],
    weights: npt.NDArray[np.int64],
    bias: Sequence[int],
    pool: WorkerPool | None = None,
    workers: int | None = None,
    method: LayerMethod | None = None,
) -> list[mpz]:
    """Enc(W x + b) for int64 weights [outputs, inputs] and signed integer biases; a
    large layer is shared by ``pool``'s processes (at most ``workers`` of them); ``method``
    (default: :func:`choose_method`'s) computes it."""
    return submit_linear(public, inputs, weights, bias, pool, workers, method)()


def submit_linear(
    public: PublicKey,
    inputs: Sequence[mpz],
    weights: npt.NDArray[np.int64],
    bias: Sequence[int],
    pool: WorkerPool | None = None,
    workers: int | None = None,
    method: LayerMethod | None = None,
) -> Pending:
    """:func:`linear`, its rows queued on the worker processes (a small layer is computed
    here and now): several layers submitted one after the other keep every core busy
    while this process prepares the next."""
    outputs, count = weights.shape
    if count != len(inputs) or len(bias) != outputs:
        raise ValueError(
            f"weights {weights.shape} do not match {len(inputs)} inputs and {len(bias)} biases"
        )
    nsquare = public.nsquare
    weights = np.asarray(weights, dtype=np.int64)
    workers = _workers(pool, workers)
    alone = choose_method(weights) if method is None else method
    parallel = (
        pool is not None
        and workers > 1
        and outputs > 1
        and alone.cost >= PARALLEL_MIN_MULTIPLICATIONS
    )
    if method is None:
        method = choose_method(weights, workers) if parallel else alone
    products: Pending
    if method.name == "tables":
        by_row: list[TableRow] = []
        for row in weights:
            columns = np.flatnonzero(row)
            by_row.append((columns, row[columns]))
        every = dict(enumerate(inputs))
        serial: tuple[Any, ...] = (nsquare, every, by_row, method.digit_bits)
        if pool is None or not parallel:
            products = done(table_rows(*serial))
        else:
            parts: list[tuple[Any, ...]] = []
            for lo, hi in _slices([len(c) for c, _ in by_row], workers):
                part = by_row[lo:hi]
                used = {j for columns, _ in part for j in columns.tolist()}
                parts.append((nsquare, {j: inputs[j] for j in used}, part, method.digit_bits))
            products = pool.submit(table_rows, parts, serial)
        return lambda: add_plain(public, products(), bias)
    needs_inverse = np.flatnonzero((weights < 0).any(axis=0)).tolist()
    inverted = invert_all([inputs[i] for i in needs_inverse], nsquare)
    inverses = dict(zip(needs_inverse, inverted, strict=True))
    rows: list[BucketRow] = []
    for row in weights:
        columns = np.flatnonzero(row)
        values = row[columns]
        bases = [
            inputs[i] if w > 0 else inverses[i]
            for i, w in zip(columns.tolist(), values.tolist(), strict=True)
        ]
        rows.append((bases, np.abs(values)))
    if pool is None or not parallel:
        products = done(bucket_rows(nsquare, rows))
    else:
        bucket_parts: list[tuple[Any, ...]] = [
            (nsquare, rows[lo:hi]) for lo, hi in _slices([len(b) for b, _ in rows], workers)
        ]
        products = pool.submit(bucket_rows, bucket_parts, (nsquare, rows))
    return lambda: add_plain(public, products(), bias)


def scale_inputs(
    public: PublicKey,
    ciphertexts: Sequence[mpz],
    exponents: Sequence[int],
    pool: WorkerPool | None = None,
    workers: int | None = None,
) -> list[mpz]:
    """Enc(e_i x_i) for positive integers e_i (the factors that undo a stage's
    multiplicative masks), spread over the worker processes when that pays."""
    values, powers = list(ciphertexts), [int(e) for e in exponents]
    if len(values) != len(powers):
        raise ValueError(f"{len(powers)} exponents for {len(values)} ciphertexts")
    serial: tuple[Any, ...] = (public.nsquare, values, powers)
    cost = sum(e.bit_length() * 3 // 2 for e in powers if e != 1)
    workers = _workers(pool, workers)
    if pool is None or workers < 2 or cost < SPLIT_MIN_MULTIPLICATIONS:
        return raise_each(*serial)
    parts: list[tuple[Any, ...]] = [
        (public.nsquare, values[lo:hi], powers[lo:hi])
        for lo, hi in _slices([e.bit_length() for e in powers], workers)
    ]
    return _spread(pool, raise_each, parts, serial)


def pack_scaled(
    public: PublicKey,
    ciphertexts: Sequence[mpz],
    layout: SlotLayout,
    scales: Sequence[int] | None = None,
    pool: WorkerPool | None = None,
    workers: int | None = None,
) -> list[mpz]:
    """:func:`ppinfer.paillier.pack` of c_i^(scales_i) (a stage's multiplicative masks;
    None: 1), its batches spread over the worker processes when that pays."""
    layout.check_fits(public.bits)
    nsquare, n = public.nsquare, public.n
    batches = layout.batches(len(ciphertexts))
    jobs = [
        ([ciphertexts[i] for i in batch], None if scales is None else [scales[i] for i in batch])
        for batch in batches
    ]
    scale_bits = 0 if not scales else max(int(d).bit_length() for d in scales)
    cost = len(ciphertexts) * (layout.slot_bits + scale_bits * 3 // 2)
    workers = _workers(pool, workers)
    serial: tuple[Any, ...] = (nsquare, jobs, layout.slot_bits)
    if pool is None or workers < 2 or len(jobs) < 2 or cost < SPLIT_MIN_MULTIPLICATIONS:
        raw = horner_batches(*serial)
    else:
        parts: list[tuple[Any, ...]] = [
            (nsquare, jobs[lo:hi], layout.slot_bits)
            for lo, hi in _slices([len(values) for values, _ in jobs], workers)
        ]
        raw = _spread(pool, horner_batches, parts, serial)
    return [
        c * (1 + layout.offset_sum(len(batch)) * n) % nsquare
        for c, batch in zip(raw, batches, strict=True)
    ]
