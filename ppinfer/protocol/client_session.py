"""The client's whole share of the protocol: check A's offer, open, mask, unmask.

:class:`ClientSession` is one session as an object that does no I/O: it takes A's
:class:`~ppinfer.protocol.session_messages.ServerOffer` and answers, and returns what to
send. The gRPC stub (:mod:`ppinfer.rpc.client_stub`) and the in-process deployment
(:mod:`ppinfer.protocol.in_process`) carry its messages.

Costs per inference: a ChaCha20 keystream and an int64 addition on the way in; an AEAD
open, a subtraction modulo a power of two and a permutation on the way out. No Paillier,
no big-integer arithmetic beyond Python's own ints for the output values.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ppinfer.encoding.fixedpoint import FixedPoint
from ppinfer.encoding.numerics import MIN_MASK_SIGMA
from ppinfer.encoding.wire_bytes import decode_signed
from ppinfer.errors import (
    EncodingRangeError,
    KeyMismatchError,
    PPInferError,
    ProtocolOrderError,
)
from ppinfer.protocol.revision import PROTOCOL_REVISION, require_field
from ppinfer.protocol.session_keys import (
    SALT_BYTES,
    SessionKeys,
    client_ephemeral,
    client_session_keys,
    key_server_fingerprint,
    open_sealed,
    open_ticket,
    seed_mask,
)
from ppinfer.protocol.session_messages import (
    InferRequest,
    InferResult,
    Opened,
    OpenRequest,
    ServerOffer,
)

__all__ = [
    "MIN_PIN_HEX",
    "ClientSession",
    "ClientStats",
    "ModelDescription",
    "canonical_pin",
    "describe",
    "mask_input",
    "unmask_output",
]

#: The shortest pin accepted: 64 bits of the fingerprint, as B's banner once showed it.
MIN_PIN_HEX = 16


@dataclass
class ClientStats:
    """What the client spent: serialized bytes each way (and an estimate of their framing),
    messages, and its own CPU time."""

    inferences: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    messages_up: int = 0
    messages_down: int = 0
    framing_up: int = 0
    framing_down: int = 0
    cpu_seconds: float = 0.0  # mask, encode, unseal, unmask: the stub's own work


@dataclass(frozen=True)
class ModelDescription:
    name: str
    input_shape: tuple[int, ...]
    outputs: int
    input_format: FixedPoint
    output_frac_bits: int
    output_modulus_bits: int
    aided_output_frac_bits: int
    mask_bits: int
    client_activation: str
    key_id: str


def canonical_pin(key_id: str | None) -> str | None:
    """A pinned key id in canonical form: lower-case hex, a prefix of the fingerprint of
    at least MIN_PIN_HEX digits (the whole 64 is best)."""
    if not key_id:
        return None
    pin = key_id.strip().lower()
    if not MIN_PIN_HEX <= len(pin) <= 64 or any(c not in "0123456789abcdef" for c in pin):
        raise PPInferError(
            f"a pinned key id is {MIN_PIN_HEX} to 64 hex digits (ppinfer keygen and the key "
            f"server's banner print it), not {key_id!r}"
        )
    return pin


def describe(offer: ServerOffer, pin: str | None) -> ModelDescription:
    """Check A's offer and describe its model: the pin is checked against a fingerprint
    recomputed here from the very bytes the session will use, not against the id A states."""
    try:
        fingerprint = key_server_fingerprint(offer.paillier_n, offer.key_server_x25519)
    except PPInferError as error:
        raise ProtocolOrderError(f"the model server sent malformed keys: {error}") from error
    if offer.key_id != fingerprint:
        raise KeyMismatchError(
            "the key id the model server states does not match the keys it sent; "
            "refusing to send anything"
        )
    if pin and not fingerprint.startswith(pin):
        raise KeyMismatchError(
            f"the key server's key id {fingerprint} is not the pinned {pin}; "
            "refusing to send anything"
        )
    model = offer.model
    require_field(
        bool(model.output_modulus_bits), "model server", "output_modulus_bits in its ModelInfo",
        "upgrade the model server",
    )  # fmt: skip
    if model.mask_sigma < MIN_MASK_SIGMA:
        raise PPInferError(
            f"the model masks inputs with {model.mask_sigma} statistical bits; this client "
            f"needs at least {MIN_MASK_SIGMA}"
        )
    return ModelDescription(
        name=model.name,
        input_shape=model.input_shape,
        outputs=model.outputs,
        input_format=FixedPoint(model.input_frac_bits, model.input_value_bits),
        output_frac_bits=model.output_frac_bits,
        output_modulus_bits=model.output_modulus_bits,
        aided_output_frac_bits=model.aided_output_frac_bits,
        mask_bits=model.input_value_bits + model.mask_sigma,
        client_activation=model.client_activation,
        key_id=fingerprint,
    )


class ClientSession:
    """One two-server session from the client's side, without I/O.

    ``ClientSession(offer, pin, ...)`` checks A's offer; :attr:`open_request` is the first
    message to send, :meth:`opened` takes A's answer and derives the session keys, then
    :meth:`request` masks each input and :meth:`result` opens each answer. Request ids
    count from 1 and are never reused: a new session has new keys. Each request is masked
    with the seed of its ticket: A sends those of requests 1..``tickets`` when the session
    opens, and with each result the one ``tickets`` ids further on, so at most ``tickets``
    requests can be in flight."""

    def __init__(
        self,
        offer: ServerOffer,
        pin: str | None = None,
        progress: bool = False,
        tickets: int = 1,
    ) -> None:
        self.model = describe(offer, pin)
        self.tickets = tickets
        self._offer = offer
        self._ephemeral, client_public = client_ephemeral()
        self.open_request = OpenRequest(
            model=offer.model.name,
            client_x25519=client_public,
            expected_key_id=pin or "",
            progress=progress,
            protocol=PROTOCOL_REVISION,
            tickets=tickets,
        )
        self.session_id = ""
        self._keys: SessionKeys | None = None
        self._next_id = 1
        #: the mask seed of each request the client holds a ticket for
        self._seeds: dict[int, bytes] = {}

    @property
    def keys(self) -> SessionKeys:
        """The session keys (the client's own secret; tests of a deviating client use them)."""
        return self._require_keys()

    def opened(self, answer: Opened) -> None:
        """A opened the session: the keys from ours and B's static key, salted by B,
        bound to this session."""
        if self._keys is not None:
            raise ProtocolOrderError("the session is open already")
        require_field(
            len(answer.key_salt) == SALT_BYTES, "model server", "key server salt in SessionOpened",
            "upgrade the model server",
        )  # fmt: skip
        self.session_id = answer.session_id
        self._keys = client_session_keys(
            self._ephemeral,
            self._offer.key_server_x25519,
            self.model.key_id,
            answer.session_id,
            answer.key_salt,
        )
        if len(answer.tickets) != self.tickets:
            raise ProtocolOrderError(
                f"the server sent {len(answer.tickets)} tickets for the {self.tickets} asked for"
            )
        for request_id, ticket in enumerate(answer.tickets, start=1):
            self._take_ticket(request_id, ticket)

    def ticket_seed(self, request_id: int) -> bytes:
        """The mask seed of a ticket the client holds (the client's own secret; tests of a
        deviating client use it)."""
        seed = self._seeds.get(request_id)
        if seed is None:
            raise ProtocolOrderError(f"no ticket for request {request_id} is held")
        return seed

    @property
    def ready(self) -> int:
        """Requests the client holds tickets for: how many it may send now."""
        return len(self._seeds)

    def _take_ticket(self, request_id: int, ticket: bytes) -> None:
        keys = self._require_keys()
        self._seeds[request_id] = open_ticket(keys.k_mask, self.session_id, request_id, ticket)

    def request(self, x: npt.ArrayLike) -> InferRequest:
        """The next request: ``x`` masked under a request id this session never used."""
        self._require_keys()
        request_id = self._next_id
        seed = self._seeds.get(request_id)
        if seed is None:
            raise ProtocolOrderError(
                f"no ticket for request {request_id} yet: at most {self.tickets} requests "
                "can be in flight; read a result first"
            )
        model = self.model
        # an input refused here uses neither the id nor its ticket
        masked = mask_input(seed, x, model.input_shape, model.input_format, model.mask_bits)
        del self._seeds[request_id]
        self._next_id += 1
        return InferRequest(request_id, masked)

    def result(self, answer: InferResult, request_id: int) -> npt.NDArray[np.float64]:
        """The logits of request ``request_id`` from A's answer to it."""
        keys = self._require_keys()
        if answer.request_id != request_id:
            raise ProtocolOrderError(
                f"expected the result of {request_id}, got {answer.request_id}"
            )
        if answer.ticket:
            self._take_ticket(request_id + self.tickets, answer.ticket)
        return unmask_output(
            keys,
            self.session_id,
            request_id,
            answer.sealed_output,
            answer.output_mask,
            answer.output_permutation,
            answer.value_bytes,
            self.model.output_frac_bits,
            self.model.output_modulus_bits,
        )

    def _require_keys(self) -> SessionKeys:
        if self._keys is None:
            raise ProtocolOrderError("the session has no keys: open it first")
        return self._keys


def mask_input(
    seed: bytes,
    x: npt.ArrayLike,
    input_shape: tuple[int, ...],
    input_format: FixedPoint,
    mask_bits: int,
) -> npt.NDArray[np.int64]:
    """u = round(x * 2^f) + r, r = PRG(seed) of the request's ticket, shaped like the
    model's input."""
    raw = np.asarray(x)
    if raw.dtype.kind not in "biuf":  # strings, objects, complex: no silent cast
        raise EncodingRangeError(f"an input is real numbers, not {raw.dtype} values")
    values = raw.astype(np.float64)
    if values.shape != input_shape:
        raise PPInferError(f"input shape {values.shape} does not match the model's {input_shape}")
    encoded = input_format.encode(values)
    mask = seed_mask(seed, encoded.size, mask_bits).reshape(encoded.shape)
    return encoded + mask


def unmask_output(
    keys: SessionKeys,
    session_id: str,
    request_id: int,
    sealed: bytes,
    output_mask: Sequence[int],
    permutation: Sequence[int],
    value_bytes: int,
    output_frac_bits: int,
    modulus_bits: int,
) -> npt.NDArray[np.float64]:
    """Open B's sealed values, subtract A's masks mod 2^modulus_bits (both were reduced
    to that modulus; the difference is a signed value), undo A's permutation: the logits."""
    count = len(permutation)
    if len(output_mask) != count or sorted(permutation) != list(range(count)):
        raise PPInferError("the server sent an inconsistent output mask or permutation")
    if not 2 <= modulus_bits <= 8 * value_bytes:
        raise PPInferError(
            f"the server's output modulus 2^{modulus_bits} does not match its "
            f"{value_bytes}-byte output values"
        )
    masked = decode_signed(
        open_sealed(keys.k_out, session_id, request_id, sealed), value_bytes, count
    )
    modulus, half = 1 << modulus_bits, 1 << (modulus_bits - 1)
    logits = np.empty(count, dtype=np.float64)
    for position, source in enumerate(permutation):
        value = (masked[position] - output_mask[position] + half) % modulus - half
        logits[source] = float(value) / 2.0**output_frac_bits
    return logits
