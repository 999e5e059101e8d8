"""Property tests of the vectorized Paillier operations, at 512 and 2048 bits."""

from __future__ import annotations

import functools
import os
import sys
import threading
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ppinfer.errors import CiphertextRangeError, PlaintextOverflowError
from ppinfer.paillier import (
    PrivateKey,
    PublicKey,
    RandomizerPool,
    RandomizerSource,
    add,
    add_plain,
    check_ciphertexts,
    decrypt,
    encrypt,
    fresh_randomizers,
    generate_keypair,
    mul_scalar,
    mul_scalar_all,
    rerandomize,
)
from ppinfer.paillier.fixedbase import FixedBaseRandomizers

Keypair = tuple[PublicKey, PrivateKey]
values = st.lists(st.integers(min_value=-(2**200), max_value=2**200), min_size=1, max_size=12)
small_scalars = st.integers(min_value=-(2**15), max_value=2**15)


@functools.cache
def _fixed_base(private: PrivateKey) -> FixedBaseRandomizers:
    return FixedBaseRandomizers(private)


def source(keypair: Keypair) -> RandomizerSource:
    """B's own randomizers (fixed base, as its pool fills): the properties here are the
    operations'; test_the_secret_keys_randomizers_decrypt checks r^n by CRT."""
    _, private = keypair
    return _fixed_base(private)


def test_the_secret_keys_randomizers_decrypt(keypair: Keypair) -> None:
    public, private = keypair
    ciphertexts = encrypt(public, [-3, 99, 2**150], lambda k: fresh_randomizers(public, k, private))
    assert decrypt(private, ciphertexts) == [-3, 99, 2**150]


@given(plain=values)
def test_encrypt_decrypt_round_trip(keypair: Keypair, plain: list[int]) -> None:
    public, private = keypair
    assert decrypt(private, encrypt(public, plain, source(keypair))) == plain


@given(left=values, data=st.data())
def test_add_and_add_plain(keypair: Keypair, left: list[int], data: st.DataObject) -> None:
    public, private = keypair
    right = data.draw(
        st.lists(st.integers(-(2**200), 2**200), min_size=len(left), max_size=len(left))
    )
    a = encrypt(public, left, source(keypair))
    b = encrypt(public, right, source(keypair))
    expected = [x + y for x, y in zip(left, right, strict=True)]
    assert decrypt(private, add(public, a, b)) == expected
    assert decrypt(private, add_plain(public, a, right)) == expected


@given(plain=values, data=st.data())
def test_mul_scalar_signed(keypair: Keypair, plain: list[int], data: st.DataObject) -> None:
    public, private = keypair
    scalars = data.draw(st.lists(small_scalars, min_size=len(plain), max_size=len(plain)))
    product = mul_scalar(public, encrypt(public, plain, source(keypair)), scalars)
    assert decrypt(private, product) == [x * w for x, w in zip(plain, scalars, strict=True)]


@given(plain=values, scalar=small_scalars)
def test_mul_scalar_all(keypair: Keypair, plain: list[int], scalar: int) -> None:
    public, private = keypair
    product = mul_scalar_all(public, encrypt(public, plain, source(keypair)), scalar)
    assert decrypt(private, product) == [x * scalar for x in plain]


def test_rerandomize_keeps_plaintext_changes_ciphertext(keypair: Keypair) -> None:
    public, private = keypair
    original = encrypt(public, [7, -7, 0], source(keypair))
    fresh = rerandomize(public, original, source(keypair))
    assert all(a != b for a, b in zip(original, fresh, strict=True))
    assert decrypt(private, fresh) == [7, -7, 0]


def test_same_plaintext_encrypts_differently(keypair: Keypair) -> None:
    public, _ = keypair
    ciphertexts = encrypt(public, [5] * 20, source(keypair))
    assert len(set(ciphertexts)) == 20


def test_public_only_randomizers_decrypt(keypair: Keypair) -> None:
    public, private = keypair
    ciphertexts = encrypt(public, [-3, 99], lambda count: fresh_randomizers(public, count))
    assert decrypt(private, ciphertexts) == [-3, 99]


def test_plaintext_beyond_half_n_is_refused(keypair_512: Keypair) -> None:
    public, _ = keypair_512
    with pytest.raises(PlaintextOverflowError, match="does not fit the signed range"):
        encrypt(public, [int(public.n) // 2 + 1], source(keypair_512))
    with pytest.raises(PlaintextOverflowError):
        add_plain(public, [public.n + 1], [-(int(public.n) // 2) - 1])


def test_check_ciphertexts_refuses_values_outside_z_star(keypair_512: Keypair) -> None:
    public, private = keypair_512
    [good] = encrypt(public, [1], source(keypair_512))
    check_ciphertexts(public, [good])
    for bad in (0, public.nsquare, public.nsquare + 5, private.p * 7):
        with pytest.raises(CiphertextRangeError):
            check_ciphertexts(public, [good, bad])


def test_pool_serves_hits_then_misses_never_repeating(keypair_512: Keypair) -> None:
    public, private = keypair_512
    with RandomizerPool(public, private, capacity=16, start=False) as pool:
        pool.fill()
        assert pool.stats().size == 16
        taken = pool(20)
        stats = pool.stats()
        assert (stats.hits, stats.misses, stats.size) == (16, 4, 0)
        assert len(set(taken)) == 20
        assert decrypt(private, encrypt(public, [1, 2], pool)) == [1, 2]


def test_pool_background_thread_refills(keypair_512: Keypair) -> None:
    public, private = keypair_512
    with RandomizerPool(public, private, capacity=64) as pool:
        assert pool.wait_full(timeout=30)
        first = pool(64)
        assert pool.wait_full(timeout=30), "the background thread did not refill the pool"
        second = pool(64)
        assert pool.stats().hits == 128
        assert not set(first) & set(second)
        if sys.platform == "linux":  # refills use idle cores only: the thread runs at nice 19
            refills = [t for t in threading.enumerate() if t.name == "ppinfer-randomizer-pool"]
            assert refills and all(t.native_id is not None for t in refills)
            assert all(os.getpriority(os.PRIO_PROCESS, t.native_id or 0) == 19 for t in refills)
            assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 19


def test_closed_pool_refuses(keypair_512: Keypair) -> None:
    public, _ = keypair_512
    pool = RandomizerPool(public, capacity=4)
    pool.close()
    with pytest.raises(RuntimeError, match="closed"):
        pool(1)


@pytest.mark.parametrize("bits", [512, 1024, 2048])
def test_generated_modulus_has_exact_size(bits: int) -> None:
    public, private = generate_keypair(bits)
    assert public.bits == bits
    assert private.p * private.q == public.n
    assert private.p != private.q


def test_key_repr_never_shows_primes(keypair_512: Keypair) -> None:
    public, private = keypair_512
    from secret_spellings import assert_never_shown, paillier_secrets

    text = repr(private) + str(private) + repr(public) + str(public)
    assert_never_shown(text, paillier_secrets(private))
    assert public.key_id[:16] in text


@pytest.mark.slow
def test_3072_bit_round_trip() -> None:
    public, private = generate_keypair(3072)
    assert public.bits == 3072
    plain = [2**100, -(2**100), 12345]
    randomizers = RandomizerPool(public, private, capacity=0, start=False)
    assert decrypt(private, encrypt(public, plain, randomizers)) == plain


@pytest.mark.parametrize("spell", [str, lambda v: format(v, "x"), lambda v: format(v, "X")])
def test_the_secret_check_catches_every_spelling_of_a_leaked_prime(
    keypair_512: Keypair, spell: Any
) -> None:
    """The check the log and CLI tests rely on: a planted leak of p in any spelling, even
    cut short or in base64, fails it."""
    import base64

    from secret_spellings import assert_never_shown, paillier_secrets

    _, private = keypair_512
    p = int(private.p)
    raw = p.to_bytes((p.bit_length() + 7) // 8, "big")
    for leak in (spell(p), spell(p)[:30], base64.b64encode(raw).decode()):
        with pytest.raises(AssertionError, match="a secret appears"):
            assert_never_shown(f"loaded key {leak} from disk", paillier_secrets(private))
