"""A's homomorphic matrix product against plain integer arithmetic, on real keys."""

from __future__ import annotations

import secrets
from collections.abc import Iterator

import gmpy2
import numpy as np
import pytest
from gmpy2 import mpz
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from ppinfer.paillier import PrivateKey, PublicKey, decrypt, encrypt, fresh_randomizers
from ppinfer.paillier.linear import linear, submit_linear
from ppinfer.paillier.multiexp import (
    LayerMethod,
    best_digit_bits,
    choose_method,
    invert_all,
    row_cost,
)
from ppinfer.paillier.worker_pool import WorkerPool

Keypair = tuple[PublicKey, PrivateKey]


@pytest.fixture(scope="module")
def worker_pool() -> Iterator[WorkerPool]:
    """Two worker processes, as on a two-core model server."""
    pool = WorkerPool(2)
    yield pool
    pool.close()


def _check(
    keypair: Keypair,
    weights: np.ndarray,
    x: list[int],
    bias: list[int],
) -> None:
    """Every method (the cost model's, buckets, tables of 1, 3 and 8 bits) gives W x + b."""
    public, private = keypair
    ciphertexts = encrypt(public, x, lambda count: fresh_randomizers(public, count))
    expected = [
        sum(int(w) * v for w, v in zip(row, x, strict=True)) + b
        for row, b in zip(weights, bias, strict=True)
    ]
    methods = [None, LayerMethod("buckets", 0, 0)]
    methods += [LayerMethod("tables", bits, 0) for bits in (1, 3, 8)]
    for method in methods:
        products = linear(public, ciphertexts, weights, bias, method=method)
        assert decrypt(private, products) == expected, method


@settings(max_examples=25)
@given(
    weights=arrays(
        np.int64,
        st.tuples(st.integers(1, 6), st.integers(1, 12)),
        elements=st.integers(-(2**20), 2**20) | st.just(0),
    ),
    data=st.data(),
)
def test_matches_integer_arithmetic(
    keypair_512: Keypair, weights: np.ndarray, data: st.DataObject
) -> None:
    outputs, inputs = weights.shape
    x = data.draw(st.lists(st.integers(-(2**30), 2**30), min_size=inputs, max_size=inputs))
    bias = data.draw(st.lists(st.integers(-(2**40), 2**40), min_size=outputs, max_size=outputs))
    _check(keypair_512, weights, x, bias)


def test_wide_dense_and_sparse_rows_with_folded_weights(keypair_512: Keypair) -> None:
    rng = np.random.default_rng(7)
    dense = rng.integers(-(2**40), 2**40, size=(3, 300))  # a fold of d^p makes weights wide
    sparse = np.zeros((4, 300), dtype=np.int64)
    for row in sparse:  # a convolution row: a few taps
        row[rng.choice(300, size=9, replace=False)] = rng.integers(-(2**15), 2**15, size=9)
    weights = np.vstack([dense, sparse, np.zeros((1, 300), dtype=np.int64)])
    x = [secrets.randbelow(2**24) - 2**23 for _ in range(300)]
    _check(keypair_512, weights, x, [secrets.randbelow(2**30) for _ in range(len(weights))])


def test_digit_size_follows_row_length() -> None:
    assert best_digit_bits(784, 16) > best_digit_bits(25, 16) >= 1
    # A long 16-bit row costs a few multiplications per weight, far below ~25 for powmod.
    assert row_cost(784, 16, best_digit_bits(784, 16)) / 784 < 4
    assert row_cost(25, 16, best_digit_bits(25, 16)) / 25 < 12


def test_the_cost_model_takes_tables_for_short_rows_and_buckets_for_long_ones() -> None:
    rng = np.random.default_rng(5)
    dense = rng.integers(-(2**15), 2**15, size=(128, 784))  # W1's first layer
    assert choose_method(dense, workers=2).name == "buckets"
    conv = np.zeros((980, 784), dtype=np.int64)  # 25 taps per row over shared inputs
    for row in conv:
        row[rng.choice(784, size=25, replace=False)] = rng.integers(-(2**15), 2**15, size=25)
    chosen = choose_method(conv, workers=2)
    assert chosen.name == "tables" and chosen.digit_bits >= 3
    folded = rng.integers(-(2**23), 2**23, size=(128, 128))  # widened by folded masks
    assert choose_method(folded).name == "tables"
    assert choose_method(folded).cost < sum(
        row_cost(128, 23, best_digit_bits(128, 23)) for _ in range(128)
    )


def test_shape_mismatch_is_refused(keypair_512: Keypair) -> None:
    public, _ = keypair_512
    with pytest.raises(ValueError, match="do not match"):
        linear(public, [], np.zeros((2, 3), dtype=np.int64), [0, 0])


def test_worker_processes_give_the_same_products(
    keypair_512: Keypair, worker_pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ppinfer.paillier import linear as module

    monkeypatch.setattr(module, "PARALLEL_MIN_MULTIPLICATIONS", 0)
    rng = np.random.default_rng(3)
    weights = rng.integers(-(2**15), 2**15, size=(9, 40))
    weights[4] = 0  # an empty row among the workers' slices
    x = [secrets.randbelow(2**20) for _ in range(40)]
    public, private = keypair_512
    ciphertexts = encrypt(public, x, lambda count: fresh_randomizers(public, count))
    bias = list(range(9))
    expected = [int(v) for v in weights @ np.array(x, dtype=object) + bias]
    for method in (LayerMethod("buckets", 0, 0), LayerMethod("tables", 4, 0)):
        serial = decrypt(private, linear(public, ciphertexts, weights, bias, method=method))
        parallel = decrypt(
            private, linear(public, ciphertexts, weights, bias, worker_pool, method=method)
        )
        assert serial == parallel == expected


def test_a_dead_worker_falls_back_to_this_process_and_the_pool_restarts(
    keypair_512: Keypair, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A worker killed mid-job: the layer is computed here, right, and the next job gets
    fresh workers."""
    import os
    import signal
    import time

    from ppinfer.paillier import linear as module

    monkeypatch.setattr(module, "PARALLEL_MIN_MULTIPLICATIONS", 0)
    public, private = keypair_512
    x = [5, -7, 11]
    ciphertexts = encrypt(public, x, lambda count: fresh_randomizers(public, count))
    weights = np.array([[1, 2, 3], [-4, 5, -6]], dtype=np.int64)
    pool = WorkerPool(2)
    try:
        pool.start()
        before = pool.processes()
        assert len(before) == 2
        os.kill(before[0], signal.SIGKILL)
        for _ in range(50):  # the pool notices the death at its next job, or the one after
            assert decrypt(private, linear(public, ciphertexts, weights, [0, 1], pool)) == [
                24,
                -120,
            ]
            after = pool.processes()
            if after and not set(after) & set(before):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the pool kept {pool.processes()} after a worker died")
    finally:
        pool.close()


def test_a_closed_pool_computes_in_this_process(keypair_512: Keypair) -> None:
    public, private = keypair_512
    ciphertexts = encrypt(public, [3, 4], lambda count: fresh_randomizers(public, count))
    pool = WorkerPool(2)
    pool.close()
    method = LayerMethod("buckets", 0, 10**9)  # large: would go to the workers
    weights = np.array([[2, -1], [1, 1]], dtype=np.int64)
    assert decrypt(private, linear(public, ciphertexts, weights, [0, 0], pool, method=method)) == [
        2,
        7,
    ]
    assert pool.processes() == []


def test_stage_inputs_pack_scaled_alike_here_and_on_the_workers(
    keypair_512: Keypair, worker_pool: WorkerPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    from ppinfer.encoding.packing import SlotLayout
    from ppinfer.paillier import decrypt_packed, pack
    from ppinfer.paillier import linear as module

    public, private = keypair_512
    layout = SlotLayout.for_key(40, public.bits)
    x = [secrets.randbelow(2**20) - 2**19 for _ in range(3 * layout.slots + 2)]
    scales = [1 + secrets.randbelow(2**16) for _ in x]
    ciphertexts = encrypt(public, x, lambda count: fresh_randomizers(public, count))
    scaled = [v * d for v, d in zip(x, scales, strict=True)]
    serial = module.pack_scaled(public, ciphertexts, layout, scales)
    monkeypatch.setattr(module, "SPLIT_MIN_MULTIPLICATIONS", 0)
    parallel = module.pack_scaled(public, ciphertexts, layout, scales, worker_pool)
    assert serial == parallel  # Horner's rule is deterministic: the same ciphertexts
    assert decrypt_packed(private, parallel, layout, len(x)) == scaled
    assert module.pack_scaled(public, ciphertexts, layout, pool=worker_pool) == pack(
        public, ciphertexts, layout
    )


def test_layers_queued_together_give_each_its_own_product(
    keypair_512: Keypair, worker_pool: WorkerPool
) -> None:
    """Several layers submitted before any is gathered (the offline half's order), gathered
    last-first, each on the worker processes: every one is its own W x + b."""
    public, private = keypair_512
    rng = np.random.default_rng(11)
    layers = []
    for outputs, inputs in ((40, 60), (30, 40), (5, 30)):
        weights = rng.integers(-127, 128, size=(outputs, inputs))
        x = [int(v) for v in rng.integers(-(2**20), 2**20, size=inputs)]
        bias = [int(v) for v in rng.integers(-(2**30), 2**30, size=outputs)]
        ciphertexts = encrypt(public, x, lambda count: fresh_randomizers(public, count))
        method = LayerMethod("buckets", 0, 10**9)  # large: always on the workers
        pending = submit_linear(public, ciphertexts, weights, bias, worker_pool, method=method)
        layers.append((weights, x, bias, pending))
    for weights, x, bias, pending in reversed(layers):
        expected = (weights @ np.array(x, dtype=object) + np.array(bias, dtype=object)).tolist()
        assert decrypt(private, pending()) == expected


def test_invert_all_matches_one_inversion_each(keypair_512: Keypair) -> None:
    public, _ = keypair_512
    values = [mpz(secrets.randbelow(int(public.nsquare) - 2) + 2) for _ in range(9)]
    values = [v for v in values if gmpy2.gcd(v, public.nsquare) == 1]
    assert invert_all(values, public.nsquare) == [gmpy2.invert(v, public.nsquare) for v in values]
    assert invert_all([], public.nsquare) == []
    with pytest.raises(ZeroDivisionError):
        invert_all([mpz(3), public.n], public.nsquare)


def test_start_starts_every_worker_before_the_first_job() -> None:
    """A model server starts its workers before serving: they exist once this returns."""
    pool = WorkerPool(2)
    try:
        assert pool.processes() == []
        pool.start()
        assert len(pool.processes()) == 2
    finally:
        pool.close()
    assert pool.processes() == []
