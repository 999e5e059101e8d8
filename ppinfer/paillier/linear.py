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

gmpy2 holds the GIL while it multiplies, so threads cannot share this work: a layer
whose estimated cost passes :data:`PARALLEL_MIN_MULTIPLICATIONS` is split by rows over a
pool of worker processes, one per core (started once, with ``forkserver``: never a fork
of a process running gRPC threads); with tables, each worker builds the tables of the
inputs its rows use. Ciphertexts and weights go to the workers by pickle inside this
process tree only; nothing from the network is unpickled. If a worker dies the layer is
computed in this process and the pool is started again. The same workers pack the
inputs of activation stages (:func:`pack_scaled`), batch by batch, and raise inputs to
the factors that undo a stage's masks (:func:`scale_inputs`). :func:`submit_linear`
queues a layer without waiting, so that several layers keep both cores busy while this
process prepares the next (the inverses for negative weights: one inversion per layer,
by Montgomery's trick).
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import gmpy2
import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.encoding.packing import SlotLayout
from ppinfer.paillier.keys import PublicKey
from ppinfer.paillier.ops import add_plain, horner_pack

__all__ = [
    "MAX_DIGIT_BITS",
    "PARALLEL_MIN_MULTIPLICATIONS",
    "SPLIT_MIN_MULTIPLICATIONS",
    "LayerMethod",
    "Pending",
    "best_digit_bits",
    "choose_method",
    "invert_all",
    "linear",
    "pack_scaled",
    "row_cost",
    "scale_inputs",
    "start_workers",
    "submit_linear",
]

#: Below this many estimated multiplications a layer stays in the calling process: the
#: pickling and the hand-off would cost more than the second core saves.
PARALLEL_MIN_MULTIPLICATIONS = 20_000
#: The same for jobs that send each worker only its own ciphertexts (scaling inputs,
#: packing stage inputs): their hand-off is cheap, so they split from here.
SPLIT_MIN_MULTIPLICATIONS = 5_000
_WORKERS = os.cpu_count() or 1
_pool: ProcessPoolExecutor | None = None
_pool_lock = threading.Lock()

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


def _bucket_rows(nsquare: mpz, rows: list[BucketRow]) -> list[mpz]:
    """Products of several rows by buckets: what a worker process runs."""
    return [
        _bucket_row(bases, magnitudes, nsquare) if bases else mpz(1) for bases, magnitudes in rows
    ]


def _table_rows(
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


def _process_pool() -> ProcessPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            context = multiprocessing.get_context("forkserver")
            _pool = ProcessPoolExecutor(
                max_workers=_WORKERS,
                mp_context=context,
                initializer=_exit_with,
                initargs=(os.getpid(),),
            )
        return _pool


#: Seconds between a worker's checks that the process that started it is alive.
PARENT_CHECK_SECONDS = 1.0


def _exit_with(parent: int) -> None:
    """In each worker: exit once ``parent`` (model server A) is gone. A killed A would
    otherwise leave its workers behind (a forkserver's children, about 100 MB)."""

    def watch() -> None:
        while True:
            time.sleep(PARENT_CHECK_SECONDS)
            try:
                os.kill(parent, 0)
            except ProcessLookupError:
                os._exit(0)
            except PermissionError:  # alive, under another user: still our parent
                continue

    threading.Thread(target=watch, name="ppinfer-parent-watch", daemon=True).start()


def _ready() -> int:
    return os.getpid()


def start_workers() -> None:
    """Start the worker processes now and have each import this module, so that the
    first request does not wait for them (model server A calls this at start)."""
    pool = _process_pool()
    for future in [pool.submit(_ready) for _ in range(_WORKERS)]:
        future.result()


def _restart_pool() -> None:
    global _pool
    with _pool_lock:
        if _pool is not None:
            _pool.shutdown(wait=False, cancel_futures=True)
        _pool = None


def _slices(sizes: Sequence[int], workers: int) -> list[tuple[int, int]]:
    """Contiguous row ranges of about equal total size, one per worker."""
    weights = np.cumsum(sizes)
    cuts = np.searchsorted(weights, np.linspace(0, weights[-1], workers + 1)[1:-1])
    bounds = sorted({0, len(sizes), *(min(len(sizes), int(c) + 1) for c in cuts)})
    return list(itertools.pairwise(bounds))


#: A computation handed to the worker processes: calling it waits for the result.
Pending = Callable[[], list[mpz]]


def _done(result: list[mpz]) -> Pending:
    """A result computed already, as a :data:`Pending`."""
    return lambda: result


def _submit(
    task: Callable[..., list[mpz]], parts: list[tuple[Any, ...]], serial: tuple[Any, ...]
) -> Pending:
    """``task(*part)`` for every part, queued on the worker processes now; the returned
    call gathers the results in order. If the pool breaks, ``task(*serial)`` (the whole
    job) runs in this process instead."""

    def alone() -> list[mpz]:
        _restart_pool()
        return task(*serial)

    try:
        pool = _process_pool()
        futures = [pool.submit(task, *part) for part in parts]
    except BrokenProcessPool:
        return _done(alone())

    def gather() -> list[mpz]:
        try:
            return [product for future in futures for product in future.result()]
        except BrokenProcessPool:
            return alone()

    return gather


def _spread(
    task: Callable[..., list[mpz]], parts: list[tuple[Any, ...]], serial: tuple[Any, ...]
) -> list[mpz]:
    """:func:`_submit`, waited for."""
    return _submit(task, parts, serial)()


def linear(
    public: PublicKey,
    inputs: Sequence[mpz],
    weights: npt.NDArray[np.int64],
    bias: Sequence[int],
    workers: int | None = None,
    method: LayerMethod | None = None,
) -> list[mpz]:
    """Enc(W x + b) for int64 weights [outputs, inputs] and signed integer biases;
    ``workers`` processes share a large layer (default: one per core); ``method``
    (default: :func:`choose_method`'s) computes it."""
    return submit_linear(public, inputs, weights, bias, workers, method)()


def submit_linear(
    public: PublicKey,
    inputs: Sequence[mpz],
    weights: npt.NDArray[np.int64],
    bias: Sequence[int],
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
    workers = _WORKERS if workers is None else workers
    alone = choose_method(weights) if method is None else method
    parallel = workers > 1 and outputs > 1 and alone.cost >= PARALLEL_MIN_MULTIPLICATIONS
    if method is None:
        method = choose_method(weights, workers) if parallel else alone
    products: Pending
    if method.name == "tables":
        table_rows: list[TableRow] = []
        for row in weights:
            columns = np.flatnonzero(row)
            table_rows.append((columns, row[columns]))
        every = dict(enumerate(inputs))
        serial: tuple[Any, ...] = (nsquare, every, table_rows, method.digit_bits)
        if not parallel:
            products = _done(_table_rows(*serial))
        else:
            parts: list[tuple[Any, ...]] = []
            for lo, hi in _slices([len(c) for c, _ in table_rows], workers):
                part = table_rows[lo:hi]
                used = {j for columns, _ in part for j in columns.tolist()}
                parts.append((nsquare, {j: inputs[j] for j in used}, part, method.digit_bits))
            products = _submit(_table_rows, parts, serial)
        return lambda: add_plain(public, products(), bias)
    needs_inverse = np.flatnonzero((weights < 0).any(axis=0)).tolist()
    inverted = invert_all([inputs[i] for i in needs_inverse], nsquare)
    inverses = dict(zip(needs_inverse, inverted, strict=True))
    bucket_rows: list[BucketRow] = []
    for row in weights:
        columns = np.flatnonzero(row)
        values = row[columns]
        bases = [
            inputs[i] if w > 0 else inverses[i]
            for i, w in zip(columns.tolist(), values.tolist(), strict=True)
        ]
        bucket_rows.append((bases, np.abs(values)))
    if not parallel:
        products = _done(_bucket_rows(nsquare, bucket_rows))
    else:
        bucket_parts: list[tuple[Any, ...]] = [
            (nsquare, bucket_rows[lo:hi])
            for lo, hi in _slices([len(b) for b, _ in bucket_rows], workers)
        ]
        products = _submit(_bucket_rows, bucket_parts, (nsquare, bucket_rows))
    return lambda: add_plain(public, products(), bias)


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


def _raise_each(nsquare: mpz, ciphertexts: list[mpz], exponents: list[int]) -> list[mpz]:
    """c_i^(e_i) mod n^2 for every pair: what a worker process runs."""
    pairs = zip(ciphertexts, exponents, strict=True)
    return [c if e == 1 else gmpy2.powmod(c, e, nsquare) for c, e in pairs]


def scale_inputs(
    public: PublicKey,
    ciphertexts: Sequence[mpz],
    exponents: Sequence[int],
    workers: int | None = None,
) -> list[mpz]:
    """Enc(e_i x_i) for positive integers e_i (the factors that undo a stage's
    multiplicative masks), spread over the worker processes when that pays."""
    values, powers = list(ciphertexts), [int(e) for e in exponents]
    if len(values) != len(powers):
        raise ValueError(f"{len(powers)} exponents for {len(values)} ciphertexts")
    serial: tuple[Any, ...] = (public.nsquare, values, powers)
    cost = sum(e.bit_length() * 3 // 2 for e in powers if e != 1)
    workers = _WORKERS if workers is None else workers
    if workers < 2 or cost < SPLIT_MIN_MULTIPLICATIONS:
        return _raise_each(*serial)
    parts: list[tuple[Any, ...]] = [
        (public.nsquare, values[lo:hi], powers[lo:hi])
        for lo, hi in _slices([e.bit_length() for e in powers], workers)
    ]
    return _spread(_raise_each, parts, serial)


def _horner_batches(
    nsquare: mpz, batches: list[tuple[list[mpz], list[int] | None]], slot_bits: int
) -> list[mpz]:
    """Several packed ciphertexts without their offsets: what a worker process runs."""
    return [horner_pack(nsquare, values, scales, slot_bits) for values, scales in batches]


def pack_scaled(
    public: PublicKey,
    ciphertexts: Sequence[mpz],
    layout: SlotLayout,
    scales: Sequence[int] | None = None,
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
    workers = _WORKERS if workers is None else workers
    serial: tuple[Any, ...] = (nsquare, jobs, layout.slot_bits)
    if workers < 2 or len(jobs) < 2 or cost < SPLIT_MIN_MULTIPLICATIONS:
        raw = _horner_batches(*serial)
    else:
        parts: list[tuple[Any, ...]] = [
            (nsquare, jobs[lo:hi], layout.slot_bits)
            for lo, hi in _slices([len(values) for values, _ in jobs], workers)
        ]
        raw = _spread(_horner_batches, parts, serial)
    return [
        c * (1 + layout.offset_sum(len(batch)) * n) % nsquare
        for c, batch in zip(raw, batches, strict=True)
    ]
