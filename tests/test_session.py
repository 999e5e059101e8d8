"""Session cryptography: both sides derive the same keys; masks and seals behave as specified."""

from __future__ import annotations

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.errors import PPInferError
from ppinfer.session import (
    SealError,
    client_handshake,
    input_mask,
    open_sealed,
    public_bytes,
    seal,
    server_handshake,
)


def test_client_and_server_derive_the_same_keys() -> None:
    static = X25519PrivateKey.generate()
    client_public, client_keys = client_handshake(public_bytes(static.public_key()), "kid")
    server_keys = server_handshake(static, client_public, "kid")
    assert client_keys == server_keys
    assert client_keys.k_mask != client_keys.k_out
    assert "secret" in repr(client_keys) and client_keys.k_mask.hex() not in repr(client_keys)
    # Binding: another key id (another Paillier key) gives other session keys.
    assert server_handshake(static, client_public, "other") != server_keys


def test_every_session_is_fresh() -> None:
    static_public = public_bytes(X25519PrivateKey.generate().public_key())
    first = client_handshake(static_public, "kid")
    second = client_handshake(static_public, "kid")
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
