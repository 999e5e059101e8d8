"""B's fixed-base randomizers: n-th residues, the right powers, usable for encryption."""

from __future__ import annotations

import gmpy2
import pytest
from gmpy2 import mpz

from ppinfer.paillier import PrivateKey, PublicKey, RandomizerPool, decrypt
from ppinfer.paillier.fixedbase import FixedBaseRandomizers

Keypair = tuple[PublicKey, PrivateKey]


def test_power_is_the_fixed_base_raised_to_the_exponent(keypair: Keypair) -> None:
    public, private = keypair
    randomizers = FixedBaseRandomizers(private)
    for exponent in (0, 1, 255, 256, 2**511 + 12345, 2**512 - 1):
        expected = gmpy2.powmod(randomizers.base, exponent, public.nsquare)
        assert randomizers.power(exponent.to_bytes(64, "little")) == expected


def test_randomizers_are_nth_residues_and_encrypt(keypair: Keypair) -> None:
    public, private = keypair
    p, q = int(private.p), int(private.q)
    carmichael = (p - 1) * (q - 1) // gmpy2.gcd(p - 1, q - 1)
    values = FixedBaseRandomizers(private)(40)
    assert len(set(values)) == 40
    for r in values:  # an n-th residue mod n^2 has order dividing lambda(n)
        assert gmpy2.powmod(r, carmichael, public.nsquare) == 1
    messages = list(range(-20, 20))
    pool = RandomizerPool(public, private, capacity=8, generator=FixedBaseRandomizers(private))
    try:
        randomizers = pool(len(messages))
    finally:
        pool.close()
    ciphertexts = [
        (1 + (m % public.n) * public.n) * r % public.nsquare
        for m, r in zip(messages, randomizers, strict=True)
    ]
    assert decrypt(private, [mpz(c) for c in ciphertexts]) == messages


def test_exponent_size_is_checked(keypair_512: Keypair) -> None:
    with pytest.raises(ValueError, match="multiple of 8"):
        FixedBaseRandomizers(keypair_512[1], exponent_bits=100)
