"""What the client and model server A say to each other, as plain values.

The parties (:mod:`ppinfer.protocol.client_session`, :mod:`ppinfer.protocol.model_session`)
take and return these; :mod:`ppinfer.rpc.session_converters` turns each into its
ppinfer.v1 message and back, and the in-process deployment hands them over as they are.
Client-aided sessions (a benchmark baseline) speak protobuf directly and are not here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "MAX_TICKETS",
    "InferRequest",
    "InferResult",
    "ModelOffer",
    "OpenRequest",
    "Opened",
    "ProgressEvent",
    "ServerOffer",
]


@dataclass(frozen=True)
class ModelOffer:
    """One model as A describes it to clients (ModelInfo)."""

    name: str
    input_shape: tuple[int, ...]
    outputs: int
    input_frac_bits: int
    input_value_bits: int
    output_frac_bits: int
    output_modulus_bits: int
    aided_output_frac_bits: int
    mask_sigma: int
    client_activation: str
    layers: int


@dataclass(frozen=True)
class ServerOffer:
    """What A answers GetServerInfo with: the model, B's two public keys and their
    fingerprint, and whether client-aided sessions are taken."""

    model: ModelOffer
    paillier_bits: int
    paillier_n: bytes
    paillier_key_id: str
    key_server_x25519: bytes
    key_id: str
    client_aided: bool


#: Most tickets a session holds ahead (its pipeline depth); each costs a request entry.
MAX_TICKETS = 8


@dataclass(frozen=True)
class OpenRequest:
    """The client's first message of a two-server session (OpenSession)."""

    model: str
    client_x25519: bytes
    expected_key_id: str
    progress: bool
    protocol: int
    #: requests ahead the client wants tickets for (its pipeline depth), 1 to 8
    tickets: int = 1


@dataclass(frozen=True)
class Opened:
    """A's answer to open: the session id, the fingerprint it uses, B's salt, and B's
    tickets for the first requests (ids 1, 2, ...)."""

    session_id: str
    key_id: str
    key_salt: bytes
    tickets: tuple[bytes, ...] = ()


@dataclass(frozen=True)
class InferRequest:
    """One masked input, u = x^ + r, r from the seed of the request's ticket."""

    request_id: int
    masked_input: npt.NDArray[np.int64]


@dataclass(frozen=True)
class InferResult:
    """One answer: B's sealed, masked, permuted outputs, A's output mask, and the ticket
    of the request ``tickets`` ids further on (empty: none)."""

    request_id: int
    sealed_output: bytes
    output_mask: tuple[int, ...]
    value_bytes: int
    output_permutation: tuple[int, ...]
    ticket: bytes = b""


@dataclass(frozen=True)
class ProgressEvent:
    """A finished ``layer`` of ``layers`` steps of request ``request_id``."""

    request_id: int
    layer: int
    layers: int
