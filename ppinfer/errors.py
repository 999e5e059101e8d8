"""Typed errors. Every failure a caller can cause raises one of these with a message
that says what was wrong and what to do; servers map them to gRPC status codes."""

from __future__ import annotations

__all__ = [
    "ChunkSequenceError",
    "CiphertextFormatError",
    "CiphertextRangeError",
    "ConfigError",
    "EncodingRangeError",
    "InferenceFailedError",
    "KeyFileError",
    "KeyMismatchError",
    "LimitExceededError",
    "MissingDependencyError",
    "ModeDisabledError",
    "PPInferError",
    "PlaintextOverflowError",
    "ProtocolOrderError",
    "ProtocolRevisionError",
    "RandomizerPoolClosedError",
    "RequestReuseError",
    "ServerError",
    "SlotOverflowError",
    "TensorFormatError",
    "UnknownEntryError",
    "UnknownModelError",
    "UnknownSessionError",
]


class PPInferError(Exception):
    """Base of every error ppinfer raises on purpose.

    ``status`` names the gRPC status code a server answers with (the transport maps the
    name; this module stays free of grpc).
    """

    status = "INVALID_ARGUMENT"


class EncodingRangeError(PPInferError, ValueError):
    """A real value is NaN, infinite or outside the declared fixed-point range."""

    status = "OUT_OF_RANGE"


class PlaintextOverflowError(PPInferError, OverflowError):
    """An integer does not fit the signed plaintext range (-n/2, n/2) of the key."""

    status = "OUT_OF_RANGE"


class SlotOverflowError(PPInferError, OverflowError):
    """A packed value exceeded its declared bit bound, so its slot cannot be trusted."""

    status = "OUT_OF_RANGE"


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

    status = "FAILED_PRECONDITION"


class KeyMismatchError(PPInferError):
    """Two keys that must belong together do not (for example a pinned key id)."""

    status = "FAILED_PRECONDITION"


class RandomizerPoolClosedError(PPInferError, RuntimeError):
    """The randomizer pool was used after close()."""

    status = "UNAVAILABLE"


class UnknownSessionError(PPInferError):
    """A session id the server does not know (never opened, ended, or evicted)."""

    status = "NOT_FOUND"


class UnknownEntryError(PPInferError):
    """A request entry the key server does not hold (discarded, or made by another B)."""

    status = "NOT_FOUND"


class RequestReuseError(PPInferError):
    """A request id used twice in one session: its mask would be reused."""

    status = "ALREADY_EXISTS"


class ProtocolOrderError(PPInferError):
    """A message came out of the protocol's order (for example an inference before open)."""

    status = "FAILED_PRECONDITION"


class ProtocolRevisionError(PPInferError):
    """Two parties (client and model server, or model server and key server) speak
    different revisions of the protocol."""

    status = "FAILED_PRECONDITION"


class InferenceFailedError(PPInferError):
    """A request failed after its input was accepted. The client is told only this, never
    which hidden value or stage failed: a distinct message would be an oracle on hidden
    magnitudes for a client that sends values past the declared range."""

    status = "OUT_OF_RANGE"


class ModeDisabledError(PPInferError):
    """A mode this server does not offer as configured (client-aided sessions)."""

    status = "FAILED_PRECONDITION"


class LimitExceededError(PPInferError):
    """A per-server or per-peer limit was reached."""

    status = "RESOURCE_EXHAUSTED"


class UnknownModelError(PPInferError):
    """The model server has no model of that name."""

    status = "NOT_FOUND"


class ServerError(PPInferError):
    """A server answered a call with an error status (client side)."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class MissingDependencyError(PPInferError, ImportError):
    """A server-side feature was used on a client-only install."""

    status = "UNIMPLEMENTED"


class ConfigError(PPInferError):
    """A config file or flag that cannot be used."""

    status = "INVALID_ARGUMENT"
