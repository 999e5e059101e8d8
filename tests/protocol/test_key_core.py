"""Key server B's request entries, answer masks and sealing: entries made before any
session and bound once, shares that turn A's plain values into what B evaluates, y + t
in the clear with each t fresh and used once, and outputs reduced to what the client needs.

Real 1024-bit Paillier keys, B's core called in process as A's gRPC streams call it.
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
    UnknownEntryError,
    UnknownSessionError,
)
from ppinfer.paillier import RandomizerPool, decrypt, encrypt, fresh_randomizers, pack
from ppinfer.protocol.client_session import unmask_output
from ppinfer.protocol.key_core import MAX_OPEN_REQUESTS, MAX_REFUSALS, KeyServerCore
from ppinfer.protocol.session_keys import (
    SessionKeys,
    client_ephemeral,
    client_session_keys,
    open_ticket,
    seed_mask,
)

RELU = StageSpec((Function("relu"),))
PRE_ACTIVATIONS = [-7, 0, 5, 1_000, -3, 12]
#: How A's values for one stage are bounded (|v| < 2^32) and how B's shares are packed.
STAGE = SlotLayout.for_key(32, 1024)
SHARE = SlotLayout.for_key(100, 1024)


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
    salt, instance = core.derive(session_id, client_public)
    assert instance == core.instance
    return client_session_keys(ephemeral, core.x25519_public, core.fingerprint, session_id, salt)


class Entry:
    """One entry made as A makes it: B's masks, then A's share masks lambda per part."""

    def __init__(
        self, core: KeyServerCore, stages: list[int], bits: int = 80, outputs: int = 1
    ) -> None:
        self.core = core
        specs = [MaskSpec(count, bits) for count in stages]
        self.entry_id, self.ciphertexts = core.new_entry("A", 4, 60, specs)
        self.lambdas = []
        for part, count in enumerate([*stages, outputs]):  # every stage, then the output
            self.lambdas.append(self._share(part, count))

    def _share(self, part: int, count: int) -> list[int]:
        public = self.core.public
        lam = additive_masks(count, SHARE.value_bits - 1)
        packed = pack(public, encrypt(public, lam, partial(fresh_randomizers, public)), SHARE)
        self.core.store_share(self.entry_id, part, SHARE, count, packed)
        return lam

    def values(self, part: int, plain: list[int], layout: SlotLayout = STAGE) -> list[int]:
        """What A sends for ``plain``: v - lambda mod 2^(b+2), signed. B's share holds
        lambda here (the mask part d·(-W m) is 0 in these tests)."""
        bits = layout.value_bits + 2
        half = 1 << (bits - 1)
        pairs = zip(plain, self.lambdas[part], strict=False)
        return [(v - lam + half) % (2 * half) - half for v, lam in pairs]


def _bound(core: KeyServerCore, request_id: int, stages: list[int], session: str = "s",
           **options: Any) -> Entry:  # fmt: skip
    entry = Entry(core, stages, **options)
    core.bind(session, entry.entry_id, request_id)
    return entry


def _call(count: int) -> StageCall:
    return StageCall(RELU, STAGE, count, 0, 0)


def test_answers_are_results_plus_the_mask_whose_encryption_came_first(
    core: KeyServerCore, keypair_1024: Any
) -> None:
    _, private = keypair_1024
    count = len(PRE_ACTIVATIONS)
    entry = _bound(core, 1, [count])
    assert len(entry.ciphertexts) == 4 + count
    minus_t = decrypt(private, entry.ciphertexts[4:])
    answers = core.activate("s", 1, 0, _call(count), entry.values(0, PRE_ACTIVATIONS))
    relu = [max(0, v) for v in PRE_ACTIVATIONS]
    assert [a + m for a, m in zip(answers, minus_t, strict=True)] == relu
    # t is uniform over 80 bits: the answers are nowhere near the results themselves
    assert min(abs(a - y) for a, y in zip(answers, relu, strict=True)) > 2**40


def test_the_ticket_gives_the_client_the_mask_b_encrypted(
    core: KeyServerCore, keypair_1024: Any
) -> None:
    _, private = keypair_1024
    keys = _open(core, "c")
    entry = Entry(core, [2])
    ticket = core.bind("c", entry.entry_id, 1)
    seed = open_ticket(keys.k_mask, "c", 1, ticket)
    r = [int(v) for v in seed_mask(seed, 4, 60)]
    assert [-v for v in decrypt(private, entry.ciphertexts[:4])] == r
    assert len(ticket) == 48


def test_an_entry_is_bound_once_ever_and_only_where_it_was_made(core: KeyServerCore) -> None:
    entry = Entry(core, [2])
    core.bind("s", entry.entry_id, 1)
    _open(core, "other")
    with pytest.raises(RequestReuseError, match="one request, ever"):
        core.bind("other", entry.entry_id, 1)
    stranger = "0123456789abcdef." + "0" * 32  # another B instance's id
    with pytest.raises(UnknownEntryError, match="made by key server instance"):
        core.bind("other", stranger, 1)
    with pytest.raises(UnknownEntryError, match="no such entry"):
        core.bind("other", f"{core.instance}.{'0' * 32}", 1)
    incomplete, _ = core.new_entry("A", 4, 60, [MaskSpec(2, 80)])
    with pytest.raises(ProtocolOrderError, match="not complete"):
        core.bind("other", incomplete, 1)
    with pytest.raises(RequestReuseError, match="has its share already"):
        core.store_share(Entry(core, [2]).entry_id, 0, SHARE, 2, [])


def test_a_request_id_gets_one_entry(core: KeyServerCore) -> None:
    _bound(core, 1, [2])
    with pytest.raises(RequestReuseError, match="already used"):
        _bound(core, 1, [2])


def test_unbound_entries_end_with_the_stream_that_made_them(core: KeyServerCore) -> None:
    kept = _bound(core, 1, [2])
    dropped = Entry(core, [2])
    assert core.stats()["entries_held"] == 1
    assert core.discard("A") == 1
    with pytest.raises(UnknownEntryError):
        core.bind("s", dropped.entry_id, 2)
    assert core.activate("s", 1, 0, _call(2), kept.values(0, [3, -4]))  # bound: still served


def test_each_entry_gets_fresh_answer_masks(core: KeyServerCore, keypair_1024: Any) -> None:
    _, private = keypair_1024
    first = decrypt(private, Entry(core, [6]).ciphertexts[4:])
    second = decrypt(private, Entry(core, [6]).ciphertexts[4:])
    assert not set(first) & set(second)


def test_answering_requests_takes_no_paillier_operation(core: KeyServerCore) -> None:
    """Every decryption and encryption of an entry happens when it is made; answering a
    stage and sealing the output only add."""
    keys = _open(core, "c")
    entry = Entry(core, [len(PRE_ACTIVATIONS)], outputs=2)
    core.bind("c", entry.entry_id, 1)
    before = core.stats()
    core.activate("c", 1, 0, _call(len(PRE_ACTIVATIONS)), entry.values(0, PRE_ACTIVATIONS))
    seal_layout = SlotLayout.for_key(40, core.public.bits)
    call = SealCall(seal_layout, 2, 5, 0, 39)
    sealed = core.seal("c", 1, call, entry.values(1, [7, -9], seal_layout))
    after = core.stats()
    assert after["decryptions"] == before["decryptions"]
    assert after["pool_hits"] + after["pool_misses"] == before["pool_hits"] + before["pool_misses"]
    values = unmask_output(keys, "c", 1, sealed, [0, 0], [0, 1], 5, 0, 39)
    assert list(values) == [7, -9]


def test_a_stage_is_answered_once(core: KeyServerCore) -> None:
    entry = _bound(core, 1, [len(PRE_ACTIVATIONS)])
    values = entry.values(0, PRE_ACTIVATIONS)
    core.activate("s", 1, 0, _call(len(values)), values)
    with pytest.raises(RequestReuseError, match="already answered"):
        core.activate("s", 1, 0, _call(len(values)), values)


def test_a_stage_needs_its_entry(core: KeyServerCore) -> None:
    call = _call(len(PRE_ACTIVATIONS))
    with pytest.raises(ProtocolOrderError, match="no entry bound"):
        core.activate("s", 1, 0, call, [0] * len(PRE_ACTIVATIONS))
    entry = _bound(core, 2, [len(PRE_ACTIVATIONS)])
    with pytest.raises(ProtocolOrderError, match="not stage 1"):
        core.activate("s", 2, 1, call, entry.values(0, PRE_ACTIVATIONS))
    entry = _bound(core, 3, [5])
    with pytest.raises(PPInferError, match="answer mask has 5 values"):
        core.activate("s", 3, 0, call, [0] * len(PRE_ACTIVATIONS))


def test_a_refusal_ends_its_request_and_refusals_end_the_session(core: KeyServerCore) -> None:
    """A value past its bound is refused after its answer mask and share are taken: the
    request is over (id spent), and the session ends at the MAX_REFUSALS-th refusal."""
    assert MAX_REFUSALS == 4  # the sequence below reaches it exactly
    entry = _bound(core, 1, [2])
    with pytest.raises(EncodingRangeError, match="past its slot"):
        core.activate("s", 1, 0, _call(2), entry.values(0, [2**32, 1]))
    with pytest.raises(RequestReuseError, match="finished"):
        core.activate("s", 1, 0, _call(2), entry.values(0, [3, 4]))
    with pytest.raises(RequestReuseError):
        _bound(core, 1, [2])
    assert core.stats()["refusals"] == 2  # a refused bind ends nothing: no entry was used
    entry = _bound(core, 2, [2])
    with pytest.raises(PPInferError, match="residues"):
        core.activate("s", 2, 0, _call(2), [2**40, 0])  # not a 34-bit residue
    entry = _bound(core, 3, [2])
    with pytest.raises(LimitExceededError, match="ended it"):
        core.activate("s", 3, 0, _call(2), entry.values(0, [-(2**32), 0]))
    with pytest.raises(UnknownSessionError):
        _bound(core, 4, [2])


def test_results_too_wide_for_their_mask_are_refused(core: KeyServerCore) -> None:
    entry = _bound(core, 1, [len(PRE_ACTIVATIONS)], bits=41)  # hides 1-bit results only
    with pytest.raises(EncodingRangeError, match="would not hide them"):
        core.activate("s", 1, 0, _call(len(PRE_ACTIVATIONS)), entry.values(0, PRE_ACTIVATIONS))


def test_entries_and_answer_masks_are_bounded(keypair_1024: Any, core: KeyServerCore) -> None:
    with pytest.raises(PPInferError, match="answer mask bits"):
        core.new_entry("A", 4, 60, [MaskSpec(6, 20)])
    with pytest.raises(LimitExceededError):
        core.new_entry("A", 4, 60, [MaskSpec(1 << 20, 80)])
    # an abandoned request's entry goes once newer requests pile up
    entries = [_bound(core, request_id, [2]) for request_id in range(1, 2 + MAX_OPEN_REQUESTS)]
    with pytest.raises(ProtocolOrderError, match="dropped"):
        core.activate("s", 1, 0, _call(2), entries[0].values(0, [1, 2]))
    assert len(core.activate("s", 1 + MAX_OPEN_REQUESTS, 0, _call(2),
                             entries[-1].values(0, [1, 2]))) == 2  # fmt: skip
    public, private = keypair_1024
    small = KeyServerCore(private, X25519PrivateKey.generate(),
                          RandomizerPool(public, private, capacity=0, start=False),
                          max_entries=1)  # fmt: skip
    small.new_entry("A", 1, 60)
    with pytest.raises(LimitExceededError, match="--max-entries"):
        small.new_entry("A", 1, 60)


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
    keys = _open(core, "c")
    entry = Entry(core, [], outputs=len(outputs))
    core.bind("c", entry.entry_id, 1)
    call = SealCall(layout, len(outputs), value_bytes, shift, modulus_bits)
    sealed = core.seal("c", 1, call, entry.values(0, plain, layout))
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
    _bound(core, 1, [], outputs=1)
    layout = SlotLayout.for_key(92, core.public.bits)
    call = SealCall(layout, 1, value_bytes, shift, modulus_bits)
    with pytest.raises(PPInferError, match=match):
        core.seal("s", 1, call, [0])


def test_a_replayed_client_key_never_gives_the_same_session_keys(core: KeyServerCore) -> None:
    """Finding 4: B derived the same keys for one client key under any session id, so a
    deviating A replayed it, had B seal known values in the second session and read the
    keystream of the first. Now B salts every derivation afresh and binds the session id:
    the same request id of two sessions gets unrelated tickets and seals."""
    ephemeral, client_public = client_ephemeral()
    salts = [core.derive(session, client_public)[0] for session in ("first", "replay")]
    assert salts[0] != salts[1]
    entry = Entry(core, [2])
    ticket = core.bind("first", entry.entry_id, 1)
    keys = client_session_keys(ephemeral, core.x25519_public, core.fingerprint, "first", salts[0])
    replayed = client_session_keys(
        ephemeral, core.x25519_public, core.fingerprint, "replay", salts[1]
    )
    assert keys.k_mask != replayed.k_mask
    open_ticket(keys.k_mask, "first", 1, ticket)
    with pytest.raises(PPInferError):
        open_ticket(replayed.k_mask, "replay", 1, ticket)
