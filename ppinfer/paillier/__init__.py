"""Paillier on gmpy2, vectorized over lists of ciphertexts.

Server side only: needs ``ppinfer[server]``.
"""

from ppinfer.paillier.keyfile import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    load_private_key,
    load_public_key,
    save_keypair,
)
from ppinfer.paillier.keys import PrivateKey, PublicKey, generate_keypair
from ppinfer.paillier.ops import (
    add,
    add_packed,
    add_plain,
    check_ciphertexts,
    decrypt,
    decrypt_packed,
    decrypt_raw,
    encrypt,
    mul_scalar,
    mul_scalar_all,
    pack,
    rerandomize,
)
from ppinfer.paillier.randomizers import (
    PoolStats,
    RandomizerPool,
    RandomizerSource,
    fresh_randomizers,
)

__all__ = [
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "PoolStats",
    "PrivateKey",
    "PublicKey",
    "RandomizerPool",
    "RandomizerSource",
    "add",
    "add_packed",
    "add_plain",
    "check_ciphertexts",
    "decrypt",
    "decrypt_packed",
    "decrypt_raw",
    "encrypt",
    "fresh_randomizers",
    "generate_keypair",
    "load_private_key",
    "load_public_key",
    "mul_scalar",
    "mul_scalar_all",
    "pack",
    "rerandomize",
    "save_keypair",
]
