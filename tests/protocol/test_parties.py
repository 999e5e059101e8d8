"""The parties as plain objects: a client session, A's model session and B's core, wired
by hand with no transport, to test what each checks and refuses and what A ever holds."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from deployment import shared_worker_pool

from ppinfer.compiler.plan import Plan
from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate
from ppinfer.daemons.key_daemon import build_key_core
from ppinfer.errors import KeyMismatchError, PPInferError, ProtocolOrderError
from ppinfer.paillier import PrivateKey, PublicKey, RandomizerPool
from ppinfer.protocol.client_session import ClientSession
from ppinfer.protocol.in_process import InProcessKeyLink
from ppinfer.protocol.key_core import KeyServerCore
from ppinfer.protocol.model_evaluator import ModelEvaluator
from ppinfer.protocol.model_session import ModelSession
from ppinfer.protocol.revision import PROTOCOL_REVISION
from ppinfer.protocol.serving_keys import ServingKeys
from ppinfer.protocol.session_keys import SealError, open_sealed
from ppinfer.protocol.session_messages import ServerOffer


class RecordingLink(InProcessKeyLink):
    """A's link to B that keeps, as bytes, everything B hands A."""

    def __init__(self, core: KeyServerCore, received: list[bytes]) -> None:
        super().__init__(core)
        self.received = received

    def derive(self, session_id: str, client_public: bytes) -> tuple[bytes, str]:
        salt, instance = super().derive(session_id, client_public)
        self.received += [salt, instance.encode()]
        return salt, instance

    def new_entry(self, *args: Any, **kwargs: Any) -> tuple[str, list[Any]]:
        entry_id, ciphertexts = super().new_entry(*args, **kwargs)
        self.received.append(entry_id.encode())
        self.received += [
            int(c).to_bytes((int(c).bit_length() + 7) // 8, "big") for c in ciphertexts
        ]
        return entry_id, ciphertexts

    def bind(self, *args: Any, **kwargs: Any) -> bytes:
        ticket = super().bind(*args, **kwargs)
        self.received.append(ticket)
        return ticket

    def activate(self, *args: Any, **kwargs: Any) -> list[int]:
        answers = super().activate(*args, **kwargs)
        self.received += [
            v.to_bytes((v.bit_length() + 8) // 8, "big", signed=True) for v in answers
        ]
        return answers

    def seal(self, *args: Any, **kwargs: Any) -> tuple[bytes, bytes]:
        sealed, ticket = super().seal(*args, **kwargs)
        self.received += [sealed, ticket]
        return sealed, ticket


@pytest.fixture(scope="module")
def parties(
    keypair_1024: tuple[PublicKey, PrivateKey], digits_plan: Plan
) -> Iterator[tuple[ServingKeys, KeyServerCore, Program]]:
    public, private = keypair_1024
    core = build_key_core(private, X25519PrivateKey.generate(), 64, 64, None)
    pool = RandomizerPool(public, capacity=64)
    program = Program(digits_plan)
    evaluator = ModelEvaluator(program, public, pool, worker_pool=shared_worker_pool())
    yield ServingKeys.of({program.name: evaluator}, core.x25519_public), core, program
    pool.close()
    core.close()


def _session(
    serving: ServingKeys, core: KeyServerCore, received: list[bytes]
) -> tuple[ClientSession, ModelSession]:
    server = ModelSession(serving, lambda public, remaining: RecordingLink(core, received))
    client = ClientSession(serving.offer("", client_aided=False))
    client.opened(server.open(client.open_request))
    return client, server


def test_one_inference_through_the_parties_matches_the_simulator(
    parties: tuple[ServingKeys, KeyServerCore, Program], digits: Any
) -> None:
    serving, core, program = parties
    client, server = _session(serving, core, [])
    try:
        for x in digits.test_x[:2]:
            request = client.request(x)
            logits = client.result(server.infer(request), request.request_id)
            np.testing.assert_allclose(logits, simulate(program, x), atol=5e-3)  # masks differ
    finally:
        server.close()


def test_nothing_model_server_holds_opens_the_seal(
    parties: tuple[ServingKeys, KeyServerCore, Program], digits: Any
) -> None:
    """The client's k_out opens the blob A relays; k_out itself never reaches A, and no
    32-byte value A holds (client's and B's public keys, B's salt) opens it either."""
    serving, core, _ = parties
    received: list[bytes] = []
    client, server = _session(serving, core, received)
    try:
        request = client.request(digits.test_x[0])
        result = server.infer(request)
    finally:
        server.close()
    k_out = client.keys.k_out
    opened = open_sealed(k_out, client.session_id, request.request_id, result.sealed_output)
    assert len(opened) == len(result.output_mask) * result.value_bytes  # the right key opens it
    assert result.sealed_output in received  # what A relays is what B gave it
    offer = serving.offer("", client_aided=False)
    held = [
        client.open_request.client_x25519,
        offer.key_server_x25519,
        *[blob for blob in received if len(blob) == 32],
    ]
    for candidate in held:
        with pytest.raises(SealError):
            open_sealed(candidate, client.session_id, request.request_id, result.sealed_output)
    everything = b"".join(received) + b"".join(held)
    assert k_out not in everything
    assert client.keys.k_mask not in everything
    # the tickets A relayed hold the seeds of the client's masks; no seed reaches A
    assert result.ticket in received
    client.result(result, request.request_id)  # takes the next request's ticket
    seed = client.ticket_seed(request.request_id + 1)
    assert seed not in everything


def _tampered(offer: ServerOffer, **model: Any) -> ServerOffer:
    return dataclasses.replace(offer, model=dataclasses.replace(offer.model, **model))


@pytest.mark.parametrize(
    ("tamper", "error", "message"),
    [
        (lambda o: dataclasses.replace(o, key_id="0" * 64), KeyMismatchError, "does not match"),
        (
            lambda o: dataclasses.replace(o, key_server_x25519=bytes(31)),
            ProtocolOrderError,
            "malformed keys",
        ),
        (lambda o: _tampered(o, mask_sigma=20), PPInferError, "at least 40"),
        (lambda o: _tampered(o, output_modulus_bits=0), PPInferError, "output_modulus_bits"),
    ],
)
def test_a_tampered_offer_is_refused_before_anything_is_sent(
    parties: tuple[ServingKeys, KeyServerCore, Program],
    tamper: Any,
    error: type[Exception],
    message: str,
) -> None:
    serving, _, _ = parties
    offer = serving.offer("", client_aided=False)
    ClientSession(offer)  # the real offer passes
    with pytest.raises(error, match=message):
        ClientSession(tamper(offer))


def test_a_swapped_key_server_key_fails_the_pin(
    parties: tuple[ServingKeys, KeyServerCore, Program],
) -> None:
    """A swaps in its own X25519 key and restates the fingerprint to match: the offer is
    consistent, so only the client's pin catches it."""
    from ppinfer.protocol.session_keys import key_server_fingerprint, public_bytes

    serving, _, _ = parties
    offer = serving.offer("", client_aided=False)
    own = public_bytes(X25519PrivateKey.generate().public_key())
    forged = dataclasses.replace(
        offer, key_server_x25519=own, key_id=key_server_fingerprint(offer.paillier_n, own)
    )
    ClientSession(forged)  # unpinned, nothing to catch it
    with pytest.raises(KeyMismatchError, match="is not the pinned"):
        ClientSession(forged, offer.key_id)


def test_model_session_refusals(parties: tuple[ServingKeys, KeyServerCore, Program]) -> None:
    serving, core, _ = parties
    links: list[RecordingLink] = []

    def open_link(public: PublicKey, remaining: float | None) -> RecordingLink:
        links.append(RecordingLink(core, []))
        return links[-1]

    client = ClientSession(serving.offer("", client_aided=False))
    request = client.open_request
    old = dataclasses.replace(request, protocol=PROTOCOL_REVISION - 1)
    with pytest.raises(PPInferError, match="revision"):
        ModelSession(serving, open_link).open(old)
    with pytest.raises(PPInferError, match="nope"):
        ModelSession(serving, open_link).open(dataclasses.replace(request, model="nope"))
    pinned = dataclasses.replace(request, expected_key_id="ab" * 8)
    with pytest.raises(KeyMismatchError, match="refusing the session"):
        ModelSession(serving, open_link).open(pinned)
    assert links == []  # none of these reached B
    server = ModelSession(serving, open_link)
    with pytest.raises(ProtocolOrderError, match="open message"):
        server.infer(_unopened_request())
    server.open(request)
    with pytest.raises(ProtocolOrderError, match="open already"):
        server.open(request)
    server.cancel()
    with pytest.raises(PPInferError, match="closed"):
        server.infer(_unopened_request())
    server.close()
    assert len(links) == 1


def _unopened_request() -> Any:
    from ppinfer.protocol.session_messages import InferRequest

    return InferRequest(1, np.zeros(64, dtype=np.int64))


def test_entries_share_the_first_layers_weights_and_fold_the_rest_each(
    parties: tuple[ServingKeys, KeyServerCore, Program],
) -> None:
    """The first layer undoes no mask, so every entry holds the same read-only weights
    (on W1 they are 0.8 MB: 64 copies were 51 MB of A's store); the layers after it
    undo their entry's own multiplicative masks, so those are the entry's own."""
    serving, core, program = parties
    evaluator = serving.evaluators[program.name]
    link = InProcessKeyLink(core)
    first, second = evaluator.make_entry(link), evaluator.make_entry(link)
    assert first.weights[0] is second.weights[0] and not first.weights[0].flags.writeable
    np.testing.assert_array_equal(first.weights[0], program.layers[0].weights(None).full)
    assert not np.array_equal(first.weights[1], second.weights[1])  # fresh d per entry
    assert core.discard(link) == 2
