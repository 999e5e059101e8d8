"""Key server B's answer masks: y + t in the clear, each t fresh, used once, wide enough;
and its sealing of the outputs, reduced to what the client needs.

Real 1024-bit Paillier keys, B's core called in process as A's gRPC stream calls it.
"""

from __future__ import annotations

from functools import partial
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.compiler.activations import Function, MaskSpec, StageCall, StageSpec
from ppinfer.encoding.masks import additive_masks
from ppinfer.encoding.numerics import reduce_sealed
from ppinfer.encoding.packing import SealCall, SlotLayout
from ppinfer.errors import (
    EncodingRangeError,
    LimitExceededError,
    PPInferError,
    ProtocolOrderError,
    RequestReuseError,
    SlotOverflowError,
    UnknownSessionError,
)
from ppinfer.paillier import RandomizerPool, decrypt, encrypt, fresh_randomizers, pack
from ppinfer.protocol.client_session import unmask_output
from ppinfer.protocol.key_core import MAX_OPEN_REQUESTS, MAX_REFUSALS, KeyServerCore
from ppinfer.protocol.session_keys import (
    SessionKeys,
    client_ephemeral,
    client_session_keys,
    input_mask,
)

RELU = StageSpec((Function("relu"),))
PRE_ACTIVATIONS = [-7, 0, 5, 1_000, -3, 12]


@pytest.fixture
def core(keypair_1024: Any) -> KeyServerCore:
    public, private = keypair_1024
    core = KeyServerCore(
        private,
        X25519PrivateKey.generate(),
        RandomizerPool(public, private, capacity=0, start=False),
    )
    _open(core, "s")
    return core


def _open(core: KeyServerCore, session_id: str) -> SessionKeys:
    """A session on ``core`` as a client opens it (through A): the client's keys."""
    ephemeral, client_public = client_ephemeral()
    salt = core.derive(session_id, client_public)
    return client_session_keys(ephemeral, core.x25519_public, core.fingerprint, session_id, salt)


def _stage(core: KeyServerCore, values: list[int]) -> tuple[StageCall, list[Any]]:
    """``values`` as A sends a stage: encrypted, packed; ReLU at the same scale."""
    public = core.public
    layout = SlotLayout.for_key(32, public.bits)
    randomizers = partial(fresh_randomizers, public)
    packed = pack(public, encrypt(public, values, randomizers), layout)
    return StageCall(RELU, layout, len(values), 0, 0), packed


def test_answers_are_results_plus_the_mask_whose_encryption_came_first(
    core: KeyServerCore, keypair_1024: Any
) -> None:
    _, private = keypair_1024
    count = len(PRE_ACTIVATIONS)
    ciphertexts = core.masks("s", 1, 4, 60, [MaskSpec(count, 80)])
    assert len(ciphertexts) == 4 + count
    minus_t = decrypt(private, ciphertexts[4:])
    call, packed = _stage(core, PRE_ACTIVATIONS)
    answers = core.activate("s", 1, 0, call, packed)
    relu = [max(0, v) for v in PRE_ACTIVATIONS]
    assert [a + m for a, m in zip(answers, minus_t, strict=True)] == relu
    # t is uniform over 80 bits: the answers are nowhere near the results themselves
    assert min(abs(a - y) for a, y in zip(answers, relu, strict=True)) > 2**40


def test_a_request_id_gets_its_masks_once(core: KeyServerCore) -> None:
    core.masks("s", 1, 4, 60)
    with pytest.raises(RequestReuseError, match="already used"):
        core.masks("s", 1, 4, 60)


def test_each_request_gets_fresh_answer_masks(core: KeyServerCore, keypair_1024: Any) -> None:
    _, private = keypair_1024
    first = decrypt(private, core.masks("s", 1, 4, 60, [MaskSpec(6, 80)])[4:])
    second = decrypt(private, core.masks("s", 2, 4, 60, [MaskSpec(6, 80)])[4:])
    assert not set(first) & set(second)


def test_a_stage_is_answered_once(core: KeyServerCore) -> None:
    core.masks("s", 1, 4, 60, [MaskSpec(len(PRE_ACTIVATIONS), 80)])
    call, packed = _stage(core, PRE_ACTIVATIONS)
    core.activate("s", 1, 0, call, packed)
    with pytest.raises(RequestReuseError, match="already answered"):
        core.activate("s", 1, 0, call, packed)


def test_a_stage_needs_its_mask(core: KeyServerCore) -> None:
    call, packed = _stage(core, PRE_ACTIVATIONS)
    with pytest.raises(ProtocolOrderError, match="no input mask"):
        core.activate("s", 1, 0, call, packed)
    core.masks("s", 2, 4, 60, [MaskSpec(len(PRE_ACTIVATIONS), 80)])
    with pytest.raises(ProtocolOrderError, match="not stage 1"):
        core.activate("s", 2, 1, call, packed)
    core.masks("s", 3, 4, 60, [MaskSpec(5, 80)])
    with pytest.raises(PPInferError, match="answer mask has 5 values"):
        core.activate("s", 3, 0, call, packed)


def test_a_refusal_ends_its_request_and_refusals_end_the_session(
    core: KeyServerCore, keypair_1024: Any
) -> None:
    """Finding 5: a slot overflow used to be refused before the answer mask was used, so a
    deviating A could ask again and again under fresh ids, each refusal a free bit. Now a
    refused call ends its request (mask gone, id spent) and the session ends at the
    MAX_REFUSALS-th refusal."""
    public, _ = keypair_1024
    layout = SlotLayout.for_key(8, public.bits)  # slots for |v| < 2^8
    overflowing = pack(
        public, encrypt(public, [300, 1], partial(fresh_randomizers, public)), layout
    )
    call = StageCall(RELU, layout, 2, 0, 0)
    assert MAX_REFUSALS == 4  # the sequence below reaches it exactly
    core.masks("s", 1, 4, 60, [MaskSpec(2, 80)])
    with pytest.raises(SlotOverflowError):
        core.activate("s", 1, 0, call, overflowing)
    honest_call, honest = _stage(core, [3, 4])  # a well-formed stage of the same request
    with pytest.raises(RequestReuseError, match="finished"):
        core.activate("s", 1, 0, honest_call, honest)
    with pytest.raises(RequestReuseError):
        core.masks("s", 1, 4, 60, [MaskSpec(2, 80)])
    assert core.stats()["refusals"] == 3
    core.masks("s", 2, 4, 60, [MaskSpec(2, 80)])
    with pytest.raises(LimitExceededError, match="ended it"):
        core.activate("s", 2, 0, call, overflowing)
    with pytest.raises(UnknownSessionError):
        core.masks("s", 3, 4, 60, [MaskSpec(2, 80)])


def test_results_too_wide_for_their_mask_are_refused(core: KeyServerCore) -> None:
    core.masks("s", 1, 4, 60, [MaskSpec(len(PRE_ACTIVATIONS), 41)])  # hides 1-bit results
    call, packed = _stage(core, PRE_ACTIVATIONS)
    with pytest.raises(EncodingRangeError, match="would not hide them"):
        core.activate("s", 1, 0, call, packed)


def test_answer_masks_are_bounded(core: KeyServerCore) -> None:
    with pytest.raises(PPInferError, match="answer mask bits"):
        core.masks("s", 1, 4, 60, [MaskSpec(6, 20)])
    with pytest.raises(LimitExceededError):
        core.masks("s", 2, 4, 60, [MaskSpec(1 << 20, 80)])
    # an abandoned request's masks go once newer requests pile up
    for request_id in range(3, 4 + MAX_OPEN_REQUESTS):
        core.masks("s", request_id, 1, 60, [MaskSpec(len(PRE_ACTIVATIONS), 80)])
    call, packed = _stage(core, PRE_ACTIVATIONS)
    with pytest.raises(ProtocolOrderError, match="dropped"):
        core.activate("s", 3, 0, call, packed)
    assert len(core.activate("s", 3 + MAX_OPEN_REQUESTS, 0, call, packed)) == 6


def test_sealed_outputs_are_reduced_and_the_client_recovers_them(core: KeyServerCore) -> None:
    """B floors o + s by 2^shift and keeps modulus_bits bits; A's mask goes through the same
    reduction, and the client's difference is floor(o / 2^shift) or one more, signed."""
    public = core.public
    z_bits, sigma, shift = 51, 40, 20
    modulus_bits = z_bits - shift + 2
    value_bytes = (modulus_bits + 1 + 7) // 8
    outputs = [-(2**51) + 1, -(2**20) - 1, -1, 0, 2**20, 2**51 - 1]
    masks = additive_masks(len(outputs), z_bits + sigma)
    layout = SlotLayout.for_key(z_bits + sigma + 1, public.bits)
    plain = [o + s for o, s in zip(outputs, masks, strict=True)]
    packed = pack(public, encrypt(public, plain, partial(fresh_randomizers, public)), layout)
    keys = _open(core, "c")
    core.masks("c", 1, 4, 60)
    call = SealCall(layout, len(outputs), value_bytes, shift, modulus_bits)
    sealed = core.seal("c", 1, call, packed)
    assert len(sealed) == len(outputs) * value_bytes + 16  # the values, then the AEAD tag
    reduced = [reduce_sealed(s, shift, modulus_bits) for s in masks]
    order = list(range(len(outputs)))
    values = unmask_output(keys, "c", 1, sealed, reduced, order, value_bytes, 0, modulus_bits)
    for value, o in zip(values, outputs, strict=True):
        assert value - (o >> shift) in {0, 1}
    with pytest.raises(PPInferError, match="does not match"):  # a server lying about m
        unmask_output(keys, "c", 1, sealed, reduced, order, value_bytes, 0, 8 * value_bytes + 1)


@pytest.mark.parametrize(
    ("value_bytes", "shift", "modulus_bits", "match"),
    [
        (5, 0, 0, "predates protocol revision"),
        (5, 0, 40, "modulus_bits must be in"),
        (5, 93, 39, "exceeds the layout"),
    ],
)
def test_seal_reductions_that_cannot_be_honoured_are_refused(
    core: KeyServerCore, value_bytes: int, shift: int, modulus_bits: int, match: str
) -> None:
    core.masks("s", 1, 4, 60)
    layout = SlotLayout.for_key(92, core.public.bits)
    call = SealCall(layout, 1, value_bytes, shift, modulus_bits)
    with pytest.raises(PPInferError, match=match):
        core.seal("s", 1, call, [])


def test_a_replayed_client_key_never_gives_the_same_session_keys(
    core: KeyServerCore, keypair_1024: Any
) -> None:
    """Finding 4: B derived the same keys for one client key under any session id, so a
    deviating A replayed it, had B seal known values in the second session and read the
    keystream of the first. Now B salts every derivation afresh and binds the session id:
    the same request id of two sessions gets unrelated masks and seals."""
    _, private = keypair_1024
    ephemeral, client_public = client_ephemeral()
    salts = [core.derive(session, client_public) for session in ("first", "replay")]
    assert salts[0] != salts[1]
    masks = [decrypt(private, core.masks(s, 1, 4, 60)) for s in ("first", "replay")]
    assert masks[0] != masks[1]
    keys = client_session_keys(ephemeral, core.x25519_public, core.fingerprint, "first", salts[0])
    assert [-int(r) for r in input_mask(keys.k_mask, 1, 4, 60)] == masks[0]
