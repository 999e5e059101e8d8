"""The spellings a secret could take on its way into a log, an error or a repr.

A check for one spelling (say p in decimal) passes whether or not the secret leaked in
another (hex, as key files hold it; base64, as a JSON log might hold bytes). These list
every common one, each cut to its first 24 characters: a leaked prefix of a prime is
still a leak, and 24 digits of a random secret do not occur by chance.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable

from ppinfer.paillier import PrivateKey

__all__ = ["assert_never_shown", "paillier_secrets", "spellings"]

_PREFIX = 24


def spellings(secret: int | bytes) -> set[str]:
    raw = (
        secret
        if isinstance(secret, bytes)
        else int(secret).to_bytes((int(secret).bit_length() + 7) // 8, "big")
    )
    number = int.from_bytes(raw, "big")
    forms = {
        str(number),
        format(number, "x"),
        format(number, "X"),
        raw.hex(),
        base64.b64encode(raw).decode(),
        base64.urlsafe_b64encode(raw).decode(),
        str(int.from_bytes(raw, "little")),
        raw[::-1].hex(),
    }
    return {form[:_PREFIX] for form in forms}


def paillier_secrets(private: PrivateKey) -> list[int]:
    """Every number that gives the factorization away: p, q, and phi(n) = (p-1)(q-1)."""
    p, q = int(private.p), int(private.q)
    return [p, q, (p - 1) * (q - 1)]


def assert_never_shown(text: str, secrets: Iterable[int | bytes]) -> None:
    for secret in secrets:
        for form in spellings(secret):
            assert form not in text, f"a secret appears as {form!r}..."
