"""Conversions to and from python-paillier (``phe``), which stays the reference implementation."""

from __future__ import annotations

from typing import Any

from gmpy2 import mpz

from ppinfer.paillier.keys import PrivateKey, PublicKey

__all__ = [
    "from_phe_ciphertext",
    "from_phe_private_key",
    "from_phe_public_key",
    "to_phe_ciphertext",
    "to_phe_private_key",
    "to_phe_public_key",
]


def to_phe_public_key(public: PublicKey) -> Any:
    import phe

    return phe.PaillierPublicKey(int(public.n))


def to_phe_private_key(private: PrivateKey) -> Any:
    import phe

    return phe.PaillierPrivateKey(to_phe_public_key(private.public), int(private.p), int(private.q))


def from_phe_public_key(key: Any) -> PublicKey:
    return PublicKey(int(key.n))


def from_phe_private_key(key: Any) -> PrivateKey:
    return PrivateKey(from_phe_public_key(key.public_key), int(key.p), int(key.q))


def to_phe_ciphertext(phe_public_key: Any, ciphertext: mpz) -> Any:
    """A phe ``EncryptedNumber`` of an integer plaintext (exponent 0)."""
    import phe

    return phe.EncryptedNumber(phe_public_key, int(ciphertext), exponent=0)


def from_phe_ciphertext(number: Any) -> mpz:
    """The raw ciphertext of a phe ``EncryptedNumber`` whose exponent is 0 (an integer)."""
    if number.exponent != 0:
        raise ValueError(
            f"phe number has exponent {number.exponent}; only integer encodings (exponent 0) "
            "map to ppinfer plaintexts"
        )
    return mpz(number.ciphertext(be_secure=False))
