"""Integers as bytes on the wire: ciphertext vectors and signed values.

Ciphertexts travel as fixed-width big-endian unsigned integers, ``width`` bytes each
(2 * ceil(|n| / 8): 512 bytes at 2048-bit n), concatenated; signed values (B's answers,
the sealed logits) as big-endian two's complement. Only Python integers here: every
party, the client included, uses this module. Range checks against a key (c in Z*_{n^2})
are the servers' job (:func:`ppinfer.paillier.check_ciphertexts`); this module checks
lengths.
"""

from __future__ import annotations

from collections.abc import Iterable

from ppinfer.errors import CiphertextFormatError

__all__ = ["decode_ciphertexts", "decode_signed", "encode_ciphertexts", "encode_signed"]


def encode_ciphertexts(ciphertexts: Iterable[int], width: int) -> bytes:
    """Concatenate ciphertexts as ``width``-byte big-endian integers."""
    try:
        return b"".join(int(c).to_bytes(width, "big") for c in ciphertexts)
    except OverflowError as error:
        raise CiphertextFormatError(
            f"a ciphertext does not fit {width} bytes; is the width that of this key?"
        ) from error


def decode_ciphertexts(data: bytes, width: int, count: int | None = None) -> list[int]:
    """Split ``data`` into ``width``-byte big-endian integers; the length must match exactly."""
    if width <= 0:
        raise CiphertextFormatError(f"ciphertext width must be positive, got {width}")
    if len(data) % width:
        raise CiphertextFormatError(
            f"{len(data)} bytes is not a whole number of {width}-byte ciphertexts"
        )
    if count is not None and len(data) != count * width:
        raise CiphertextFormatError(
            f"expected {count} ciphertexts of {width} bytes ({count * width} bytes), "
            f"got {len(data)} bytes"
        )
    view = memoryview(data)
    return [int.from_bytes(view[i : i + width], "big") for i in range(0, len(data), width)]


def encode_signed(values: Iterable[int], width: int) -> bytes:
    """Signed integers as ``width``-byte big-endian two's complement, concatenated."""
    try:
        return b"".join(int(v).to_bytes(width, "big", signed=True) for v in values)
    except OverflowError as error:
        raise CiphertextFormatError(f"a value does not fit {width} signed bytes") from error


def decode_signed(data: bytes, width: int, count: int) -> list[int]:
    """The ``count`` signed integers of :func:`encode_signed` output; the length must match."""
    if width <= 0 or len(data) != width * count:
        raise CiphertextFormatError(
            f"expected {count} signed values of {width} bytes, got {len(data)} bytes"
        )
    view = memoryview(data)
    return [
        int.from_bytes(view[i : i + width], "big", signed=True) for i in range(0, len(data), width)
    ]
