"""Versioned key files: JSON, public and secret parts apart, the secret one mode 0600.

Loading checks the format, the version, that the stored key id matches the key, and for
a secret key that p and q are primes whose product is n. No pickle anywhere.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gmpy2

from ppinfer.encoding.documents import read_document, refuse_existing, write_document
from ppinfer.errors import KeyFileError
from ppinfer.paillier.keys import PRIME_TEST_ROUNDS, PrivateKey, PublicKey

__all__ = [
    "PRIVATE_KEY_FILE",
    "PUBLIC_KEY_FILE",
    "load_private_key",
    "load_public_key",
    "save_keypair",
]

PUBLIC_KEY_FILE = "paillier.pub.json"
PRIVATE_KEY_FILE = "paillier.key.json"
_PUBLIC_FORMAT = "ppinfer-paillier-public"
_PRIVATE_FORMAT = "ppinfer-paillier-private"
_VERSION = 1


def save_keypair(
    directory: Path, public: PublicKey, private: PrivateKey, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write both key files into ``directory``; refuse to replace keys unless ``overwrite``."""
    directory.mkdir(parents=True, exist_ok=True)
    public_path, private_path = directory / PUBLIC_KEY_FILE, directory / PRIVATE_KEY_FILE
    if not overwrite:
        refuse_existing(public_path, private_path)
    write_document(private_path, _private_document(private), mode=0o600)
    write_document(public_path, _public_document(public), mode=0o644)
    return public_path, private_path


def load_public_key(path: Path) -> PublicKey:
    """Read a public key file (a secret key file also yields its public key)."""
    document = read_document(path, (_PUBLIC_FORMAT, _PRIVATE_FORMAT), _VERSION)
    return _public_from(document, path)


def load_private_key(path: Path) -> PrivateKey:
    """Read and verify a secret key file."""
    document = read_document(path, (_PRIVATE_FORMAT,), _VERSION)
    public = _public_from(document, path)
    p, q = _hex_field(document, "p", path), _hex_field(document, "q", path)
    if p * q != public.n:
        raise KeyFileError(f"{path}: p * q does not equal n; the file is corrupt or tampered")
    if not (gmpy2.is_prime(p, PRIME_TEST_ROUNDS) and gmpy2.is_prime(q, PRIME_TEST_ROUNDS)):
        raise KeyFileError(f"{path}: p or q is not prime; the file is corrupt or tampered")
    try:
        return PrivateKey(public, p, q)
    except (ValueError, ZeroDivisionError) as error:
        raise KeyFileError(f"{path}: inconsistent secret key: {error}") from error


def _public_document(public: PublicKey) -> dict[str, Any]:
    return {
        "format": _PUBLIC_FORMAT,
        "version": _VERSION,
        "bits": public.bits,
        "n": format(public.n, "x"),
        "key_id": public.key_id,
    }


def _private_document(private: PrivateKey) -> dict[str, Any]:
    document = _public_document(private.public)
    document.update(format=_PRIVATE_FORMAT, p=format(private.p, "x"), q=format(private.q, "x"))
    return document


def _hex_field(document: dict[str, Any], name: str, path: Path) -> gmpy2.mpz:
    value = document.get(name)
    if not isinstance(value, str):
        raise KeyFileError(f"{path}: field {name!r} is missing")
    try:
        return gmpy2.mpz(value, 16)
    except ValueError as error:
        raise KeyFileError(f"{path}: field {name!r} is not hexadecimal") from error


def _public_from(document: dict[str, Any], path: Path) -> PublicKey:
    try:
        public = PublicKey(_hex_field(document, "n", path))
    except ValueError as error:
        raise KeyFileError(f"{path}: {error}") from error
    if document.get("bits") != public.bits or document.get("key_id") != public.key_id:
        raise KeyFileError(
            f"{path}: stored key id or size does not match the key; the file is corrupt or tampered"
        )
    return public
