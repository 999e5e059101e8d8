"""Paillier key pairs with g = n + 1, their key id, and key generation from the OS CSPRNG."""

from __future__ import annotations

import hashlib
import secrets

import gmpy2
from gmpy2 import mpz

__all__ = [
    "MIN_KEY_BITS",
    "PrivateKey",
    "PublicKey",
    "generate_keypair",
    "random_prime",
]

#: Below this, keys are only good for unit tests of the arithmetic.
MIN_KEY_BITS = 16
#: Miller-Rabin rounds for key generation and key-file checks (error below 2^-100).
PRIME_TEST_ROUNDS = 50


class PublicKey:
    """A Paillier public key (g = n + 1): the modulus n and values derived from it."""

    __slots__ = ("bits", "ciphertext_bytes", "half_n", "n", "nsquare")

    def __init__(self, n: int) -> None:
        if n < 15 or n % 2 == 0:
            raise ValueError("a Paillier modulus is an odd composite of two primes")
        self.n = mpz(n)
        self.nsquare = self.n * self.n
        self.half_n = self.n // 2
        self.bits = int(self.n.bit_length())
        #: Fixed width of one serialized ciphertext: 2 * ceil(|n| / 8) bytes.
        self.ciphertext_bytes = 2 * ((self.bits + 7) // 8)

    @property
    def n_bytes(self) -> bytes:
        """n big-endian in ceil(|n| / 8) bytes: how it travels and how it is fingerprinted."""
        return bytes(self.n.to_bytes((self.bits + 7) // 8, "big"))

    @property
    def key_id(self) -> str:
        """Hex SHA-256 of the canonical public key encoding: names the Paillier key between
        A and B. What a client pins covers B's X25519 key too
        (:func:`ppinfer.protocol.session_keys.key_server_fingerprint`)."""
        return hashlib.sha256(b"ppinfer-paillier-v1\x00" + self.n_bytes).hexdigest()

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and self.n == other.n

    def __hash__(self) -> int:
        return hash(("PublicKey", int(self.n)))

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, key_id={self.key_id[:16]}...)"


class PrivateKey:
    """A Paillier secret key (p, q) with the constants of CRT decryption and encryption."""

    __slots__ = (
        "hp",
        "hq",
        "n_mod_phi_psquare",
        "n_mod_phi_qsquare",
        "p",
        "p_inv_mod_q",
        "p_minus_1",
        "psquare",
        "psquare_inv_mod_qsquare",
        "public",
        "q",
        "q_minus_1",
        "qsquare",
    )

    def __init__(self, public: PublicKey, p: int, q: int) -> None:
        p_, q_ = mpz(p), mpz(q)
        if p_ * q_ != public.n:
            raise ValueError("p * q does not equal the public modulus n")
        if p_ == q_:
            raise ValueError("p and q must differ")
        if p_ > q_:  # a canonical order keeps key files and key ids stable
            p_, q_ = q_, p_
        self.public = public
        self.p, self.q = p_, q_
        self.p_minus_1, self.q_minus_1 = p_ - 1, q_ - 1
        self.psquare, self.qsquare = p_ * p_, q_ * q_
        # CRT decryption (as in python-paillier): m_p = L_p(c^(p-1) mod p^2) * hp mod p.
        self.hp = self._h(p_, self.psquare)
        self.hq = self._h(q_, self.qsquare)
        self.p_inv_mod_q = gmpy2.invert(p_, q_)
        # CRT encryption: r^n mod p^2 = r^(n mod p(p-1)) mod p^2, the same for q.
        self.n_mod_phi_psquare = public.n % (p_ * self.p_minus_1)
        self.n_mod_phi_qsquare = public.n % (q_ * self.q_minus_1)
        self.psquare_inv_mod_qsquare = gmpy2.invert(self.psquare, self.qsquare)

    def _h(self, prime: mpz, prime_square: mpz) -> mpz:
        g_pow = gmpy2.powmod(self.public.n + 1, prime - 1, prime_square)
        return gmpy2.invert((g_pow - 1) // prime, prime)

    def crt_combine_square(self, mod_psquare: mpz, mod_qsquare: mpz) -> mpz:
        """The residue mod n^2 with the given residues mod p^2 and q^2."""
        diff = (mod_qsquare - mod_psquare) * self.psquare_inv_mod_qsquare % self.qsquare
        return mod_psquare + diff * self.psquare

    def __repr__(self) -> str:  # never shows p or q
        return f"PrivateKey(bits={self.public.bits}, key_id={self.public.key_id[:16]}...)"


def random_prime(bits: int) -> mpz:
    """A uniformly drawn probable prime of exactly ``bits`` bits, top two bits set.

    Setting the two top bits makes the product of two such primes exactly 2*bits long.
    Candidates come from ``secrets``; GMP only tests them.
    """
    if bits < 8:
        raise ValueError("primes below 8 bits give no usable key")
    top = (1 << (bits - 1)) | (1 << (bits - 2)) | 1
    while True:
        candidate = mpz(secrets.randbits(bits) | top)
        if gmpy2.is_prime(candidate, PRIME_TEST_ROUNDS):
            return candidate


def generate_keypair(bits: int = 2048) -> tuple[PublicKey, PrivateKey]:
    """A fresh key pair whose modulus n has exactly ``bits`` bits (2048 default)."""
    if bits < MIN_KEY_BITS or bits % 2:
        raise ValueError(f"key size must be an even number of bits >= {MIN_KEY_BITS}, got {bits}")
    while True:
        p = random_prime(bits // 2)
        q = random_prime(bits // 2)
        if p == q:
            continue
        n = p * q
        # Equal-length primes make gcd(n, (p-1)(q-1)) = 1; check it anyway, it is cheap.
        if n.bit_length() == bits and gmpy2.gcd(n, (p - 1) * (q - 1)) == 1:
            public = PublicKey(n)
            return public, PrivateKey(public, p, q)
