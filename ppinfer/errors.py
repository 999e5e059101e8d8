"""Typed errors. Every failure a caller can cause raises one of these with a message
that says what was wrong and what to do; servers map them to gRPC status codes."""

from __future__ import annotations

__all__ = [
    "ChunkSequenceError",
    "CiphertextFormatError",
    "CiphertextRangeError",
    "EncodingRangeError",
    "KeyFileError",
    "KeyMismatchError",
    "MissingDependencyError",
    "PPInferError",
    "PlaintextOverflowError",
    "RandomizerPoolClosedError",
    "SlotOverflowError",
    "TensorFormatError",
]


class PPInferError(Exception):
    """Base of every error ppinfer raises on purpose."""


class EncodingRangeError(PPInferError, ValueError):
    """A real value is NaN, infinite or outside the declared fixed-point range."""


class PlaintextOverflowError(PPInferError, OverflowError):
    """An integer does not fit the signed plaintext range (-n/2, n/2) of the key."""


class SlotOverflowError(PPInferError, OverflowError):
    """A packed value exceeded its declared bit bound, so its slot cannot be trusted."""


class CiphertextFormatError(PPInferError, ValueError):
    """Serialized ciphertexts have the wrong length, width or count."""


class CiphertextRangeError(CiphertextFormatError):
    """A ciphertext is not an element of Z*_{n^2} (zero, >= n^2, or shares a factor with n)."""


class ChunkSequenceError(CiphertextFormatError):
    """Chunks of one vector arrived out of order, duplicated, or after the last one."""


class TensorFormatError(PPInferError, ValueError):
    """A serialized int64 tensor's shape and byte length disagree."""


class KeyFileError(PPInferError):
    """A key file is unreadable, of an unknown format or version, or inconsistent."""


class KeyMismatchError(PPInferError):
    """Two keys that must belong together do not (for example a ciphertext of another key)."""


class RandomizerPoolClosedError(PPInferError, RuntimeError):
    """The randomizer pool was used after close()."""


class MissingDependencyError(PPInferError, ImportError):
    """A server-side feature was used on a client-only install."""
