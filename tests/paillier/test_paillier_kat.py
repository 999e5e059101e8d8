"""Known-answer tests: the tiny textbook key with injected randomizers.

Expected ciphertexts were computed once from the definition Enc(m; r) = (1 + m n) r^n mod n^2
with Python's own pow(), independently of ppinfer's code, and python-paillier agrees.
"""

from __future__ import annotations

import pytest
from gmpy2 import mpz

from ppinfer.paillier import (
    PrivateKey,
    PublicKey,
    RandomizerSource,
    add,
    add_plain,
    decrypt,
    encrypt,
    mul_scalar,
    rerandomize,
)
from ppinfer.paillier.interop import to_phe_public_key

Keypair = tuple[PublicKey, PrivateKey]

# (plaintext, r, ciphertext) under n = 126869.
VECTORS = [
    (42, 1234, 11347764982),
    (-17, 99991, 9334186233),
    (0, 5, 14006673088),
]


def injected(public: PublicKey, rs: list[int]) -> RandomizerSource:
    """A randomizer source that returns r^n for the given r, in order (tests only)."""
    queue = list(rs)

    def source(count: int) -> list[mpz]:
        taken, queue[:] = queue[:count], queue[count:]
        assert len(taken) == count, "test injected too few randomizers"
        return [mpz(pow(r, int(public.n), int(public.nsquare))) for r in taken]

    return source


def test_key_constants(tiny_keypair: Keypair) -> None:
    public, _ = tiny_keypair
    assert public.n == 126869
    assert public.nsquare == 16095743161
    assert public.ciphertext_bytes == 2 * 3


@pytest.mark.parametrize(("plaintext", "r", "expected"), VECTORS)
def test_encrypt_known_answer(tiny_keypair: Keypair, plaintext: int, r: int, expected: int) -> None:
    public, private = tiny_keypair
    [ciphertext] = encrypt(public, [plaintext], injected(public, [r]))
    assert ciphertext == expected
    assert decrypt(private, [ciphertext]) == [plaintext]
    phe_key = to_phe_public_key(public)
    assert phe_key.raw_encrypt(plaintext % int(public.n), r_value=r) == expected


def test_homomorphic_known_answers(tiny_keypair: Keypair) -> None:
    public, private = tiny_keypair
    c42, c17 = VECTORS[0][2], VECTORS[1][2]
    assert add(public, [mpz(c42)], [mpz(c17)]) == [1019074943]
    assert mul_scalar(public, [mpz(c42)], [3]) == [9980184824]
    assert mul_scalar(public, [mpz(c42)], [-2]) == [10834044047]
    assert decrypt(private, [mpz(1019074943), mpz(9980184824), mpz(10834044047)]) == [25, 126, -84]
    assert decrypt(private, add_plain(public, [mpz(c42)], [-50])) == [-8]


def test_rerandomize_known_answer(tiny_keypair: Keypair) -> None:
    public, private = tiny_keypair
    c42 = mpz(VECTORS[0][2])
    [fresh] = rerandomize(public, [c42], injected(public, [777]))
    assert fresh == c42 * pow(777, 126869, 16095743161) % 16095743161
    assert fresh != c42
    assert decrypt(private, [fresh]) == [42]


def test_signed_range_edges(tiny_keypair: Keypair) -> None:
    public, private = tiny_keypair
    half = int(public.n) // 2
    values = [half - 1, -(half - 1), 1, -1]
    ciphertexts = encrypt(public, values, injected(public, [2, 3, 4, 6]))
    assert decrypt(private, ciphertexts) == values
