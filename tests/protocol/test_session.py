"""Session cryptography: both sides derive the same keys; masks and seals behave as specified."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.errors import PPInferError
from ppinfer.protocol.session_keys import (
    SALT_BYTES,
    SealError,
    SessionKeys,
    client_ephemeral,
    client_session_keys,
    input_mask,
    key_server_fingerprint,
    new_salt,
    open_sealed,
    open_ticket,
    public_bytes,
    seal,
    seal_ticket,
    seed_mask,
    server_session_keys,
)


def _handshake(
    static: X25519PrivateKey, session_id: str = "s1", salt: bytes = bytes(SALT_BYTES)
) -> tuple[bytes, SessionKeys, SessionKeys]:
    """(client public, client's keys, B's keys) for one session."""
    server_public = public_bytes(static.public_key())
    fingerprint = key_server_fingerprint(b"\x01" * 8, server_public)
    ephemeral, client_public = client_ephemeral()
    client = client_session_keys(ephemeral, server_public, fingerprint, session_id, salt)
    server = server_session_keys(static, client_public, fingerprint, session_id, salt)
    return client_public, client, server


def test_client_and_server_derive_the_same_keys() -> None:
    static = X25519PrivateKey.generate()
    _, client_keys, server_keys = _handshake(static)
    assert client_keys == server_keys
    assert client_keys.k_mask != client_keys.k_out
    assert "secret" in repr(client_keys) and client_keys.k_mask.hex() not in repr(client_keys)


def test_keys_are_bound_to_fingerprint_session_and_salt() -> None:
    """A replayed client key under another session id or salt gives other keys, so no
    (key, nonce) pair of the mask stream or the seal can repeat (finding 4)."""
    static = X25519PrivateKey.generate()
    client_public, _, keys = _handshake(static)
    fingerprint = key_server_fingerprint(b"\x01" * 8, public_bytes(static.public_key()))
    salt = bytes(SALT_BYTES)
    assert server_session_keys(static, client_public, fingerprint, "s2", salt) != keys
    assert server_session_keys(static, client_public, fingerprint, "s1", new_salt()) != keys
    other = key_server_fingerprint(b"\x02" * 8, public_bytes(static.public_key()))
    assert server_session_keys(static, client_public, other, "s1", salt) != keys
    assert new_salt() != new_salt() and len(new_salt()) == SALT_BYTES


def test_the_fingerprint_covers_both_public_keys_of_b() -> None:
    """An A that swaps B's X25519 key for its own changes what the client computes, so a
    pinned client refuses (finding 3)."""
    n = bytes(range(1, 129))
    x25519 = public_bytes(X25519PrivateKey.generate().public_key())
    swapped = public_bytes(X25519PrivateKey.generate().public_key())
    assert key_server_fingerprint(n, x25519) != key_server_fingerprint(n, swapped)
    assert key_server_fingerprint(n, x25519) != key_server_fingerprint(n[:-1] + b"\0", x25519)
    with pytest.raises(PPInferError, match="32 bytes"):
        key_server_fingerprint(n, x25519[:31])


@pytest.mark.parametrize("point", [bytes(32), (1).to_bytes(32, "little")])
def test_a_low_order_point_is_a_clear_error(point: bytes) -> None:
    """The all-zero shared secret of a low-order point is refused by name (finding 7)."""
    static = X25519PrivateKey.generate()
    fingerprint = key_server_fingerprint(b"\x01", public_bytes(static.public_key()))
    with pytest.raises(PPInferError, match="low-order point"):
        server_session_keys(static, point, fingerprint, "s", bytes(SALT_BYTES))


def test_every_session_is_fresh() -> None:
    static = X25519PrivateKey.generate()
    first, second = _handshake(static), _handshake(static)
    assert first[0] != second[0] and first[1] != second[1]


def test_masks_are_reproducible_per_request_and_differ_between_requests() -> None:
    key = bytes(range(32))
    mask = input_mask(key, 7, 1000, 50)
    assert np.array_equal(mask, input_mask(key, 7, 1000, 50))
    assert not np.array_equal(mask, input_mask(key, 8, 1000, 50))
    assert mask.dtype == np.int64 and mask.min() >= 0 and mask.max() < 2**50
    # Uniform over 50 bits: the top bit is set about half the time.
    assert 0.4 < np.mean(mask >= 2**49) < 0.6


def test_mask_bits_are_bounded() -> None:
    with pytest.raises(PPInferError):
        input_mask(bytes(32), 1, 4, 63)


def test_seal_opens_only_for_its_session_and_request() -> None:
    key = bytes(32)
    sealed = seal(key, "session-a", 3, b"masked logits")
    assert open_sealed(key, "session-a", 3, sealed) == b"masked logits"
    for session, request in [("session-b", 3), ("session-a", 4)]:
        with pytest.raises(SealError, match="failed authentication"):
            open_sealed(key, session, request, sealed)
    tampered = bytes([sealed[0] ^ 1]) + sealed[1:]
    with pytest.raises(SealError):
        open_sealed(key, "session-a", 3, tampered)


def test_a_ticket_opens_only_for_its_session_and_request() -> None:
    key, seed = bytes(32), bytes(range(32))
    ticket = seal_ticket(key, "session-a", 3, seed)
    assert len(ticket) == 48  # the seed and its tag: what a client receives per inference
    assert open_ticket(key, "session-a", 3, ticket) == seed
    for session, request in [("session-b", 3), ("session-a", 4)]:
        with pytest.raises(SealError, match="failed authentication"):
            open_ticket(key, session, request, ticket)
    # a result sealed under the same key and nonce value is not a ticket (domains differ)
    with pytest.raises(SealError):
        open_ticket(key, "session-a", 3, seal(key, "session-a", 3, seed))


PROTOCOL_MD = Path(__file__).resolve().parents[2] / "docs" / "PROTOCOL.md"


def _known_answers() -> dict[str, str]:
    """The test vectors as docs/PROTOCOL.md prints them (between its kat markers)."""
    text = PROTOCOL_MD.read_text(encoding="utf-8")
    block = text.split("<!-- kat:begin -->", 1)[1].split("<!-- kat:end -->", 1)[0]
    pairs = [line.split("=", 1) for line in block.splitlines() if "=" in line]
    return {name.strip(): value.strip() for name, value in pairs}


def test_known_answers_in_the_protocol_document() -> None:
    """KDF, mask stream and seal from fixed keys, salt and session id, so that a client
    written in another language can be checked against the same figures."""
    kat = _known_answers()
    b_static = X25519PrivateKey.from_private_bytes(bytes.fromhex(kat["b_x25519_private"]))
    c_ephemeral = X25519PrivateKey.from_private_bytes(bytes.fromhex(kat["c_x25519_private"]))
    b_public, c_public = (public_bytes(k.public_key()) for k in (b_static, c_ephemeral))
    assert b_public.hex() == kat["b_x25519_public"]
    assert c_public.hex() == kat["c_x25519_public"]
    fingerprint = key_server_fingerprint(bytes.fromhex(kat["paillier_n"]), b_public)
    assert fingerprint == kat["fingerprint"]
    session, salt = kat["session_id"], bytes.fromhex(kat["salt"])
    keys = client_session_keys(c_ephemeral, b_public, fingerprint, session, salt)
    assert keys == server_session_keys(b_static, c_public, fingerprint, session, salt)
    assert (keys.k_mask.hex(), keys.k_out.hex()) == (kat["k_mask"], kat["k_out"])
    seed = bytes.fromhex(kat["seed"])
    ticket = seal_ticket(keys.k_mask, session, 1, seed)
    assert ticket.hex() == kat["ticket_request_1"]
    assert open_ticket(keys.k_mask, session, 1, ticket) == seed
    mask = seed_mask(seed, 4, 60)
    assert [int(v) for v in mask] == [int(v) for v in kat["mask_seed_count_4_bits_60"].split()]
    sealed = seal(keys.k_out, session, 1, bytes.fromhex(kat["seal_plaintext"]))
    assert sealed.hex() == kat["sealed_request_1"]
    assert open_sealed(keys.k_out, session, 1, sealed).hex() == kat["seal_plaintext"]
