"""Session cryptography shared by the client and the key server B (no Paillier here).

- Key agreement: the client's ephemeral X25519 key with B's static X25519 key, then
  HKDF-SHA256 over the shared secret, bound to both public keys and B's Paillier key id,
  gives ``k_mask`` (seed of the input masks) and ``k_out`` (AEAD key for results).
- Input masks: r = ChaCha20(k_mask, nonce from the request id) read as uint64 and cut to
  ``mask_bits`` bits: uniform in [0, 2^mask_bits). A request id gives one mask, once.
- Results: ChaCha20-Poly1305 under ``k_out``; the nonce comes from the request id (unique
  in the session, enforced by B) and the associated data binds session and request.

This module is on the client path: it needs ``cryptography`` and numpy only.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ppinfer.errors import PPInferError

__all__ = [
    "MAX_MASK_BITS",
    "X25519_KEY_BYTES",
    "SealError",
    "SessionKeys",
    "client_handshake",
    "input_mask",
    "open_sealed",
    "public_bytes",
    "seal",
    "server_handshake",
]

X25519_KEY_BYTES = 32
#: u = x^ + r must fit int64: r below 2^62 and |x^| below 2^(62 - sigma) leave room.
MAX_MASK_BITS = 62
_HKDF_INFO = b"ppinfer v1 session keys"
_MASK_DOMAIN = b"mask"
_SEAL_DOMAIN = b"seal"


class SealError(PPInferError):
    """A sealed result failed authentication: it was altered, or is for another session."""


@dataclass(frozen=True)
class SessionKeys:
    """The two symmetric keys of a session; never logged, never sent."""

    k_mask: bytes
    k_out: bytes

    def __repr__(self) -> str:
        return "SessionKeys(<secret>)"


def public_bytes(key: X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _derive(shared: bytes, client_public: bytes, server_public: bytes, key_id: str) -> SessionKeys:
    context = _HKDF_INFO + client_public + server_public + key_id.encode("ascii")
    material = HKDF(algorithm=hashes.SHA256(), length=64, salt=None, info=context).derive(shared)
    return SessionKeys(k_mask=material[:32], k_out=material[32:])


def _load_peer(raw: bytes) -> X25519PublicKey:
    if len(raw) != X25519_KEY_BYTES:
        raise PPInferError(f"an X25519 public key is {X25519_KEY_BYTES} bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def client_handshake(server_public: bytes, key_id: str) -> tuple[bytes, SessionKeys]:
    """A fresh ephemeral key: (its public bytes to send, the session keys)."""
    ephemeral = X25519PrivateKey.generate()
    own_public = public_bytes(ephemeral.public_key())
    shared = ephemeral.exchange(_load_peer(server_public))
    return own_public, _derive(shared, own_public, server_public, key_id)


def server_handshake(static: X25519PrivateKey, client_public: bytes, key_id: str) -> SessionKeys:
    """B's side: the same session keys from its static key and the client's ephemeral key."""
    shared = static.exchange(_load_peer(client_public))
    return _derive(shared, client_public, public_bytes(static.public_key()), key_id)


def _nonce(domain: bytes, request_id: int) -> bytes:
    return domain + struct.pack("<Q", request_id)


def input_mask(k_mask: bytes, request_id: int, count: int, mask_bits: int) -> npt.NDArray[np.int64]:
    """The mask r of one request: ``count`` values uniform in [0, 2^mask_bits)."""
    if not 1 <= mask_bits <= MAX_MASK_BITS:
        raise PPInferError(f"mask_bits must be in [1, {MAX_MASK_BITS}], got {mask_bits}")
    # ChaCha20's 16-byte nonce: a 4-byte block counter (0) then 12 bytes of our nonce.
    nonce = b"\0\0\0\0" + _nonce(_MASK_DOMAIN, request_id)
    stream = Cipher(algorithms.ChaCha20(k_mask, nonce), mode=None).encryptor()
    raw = np.frombuffer(stream.update(bytes(8 * count)), dtype="<u8")
    return (raw & np.uint64((1 << mask_bits) - 1)).astype(np.int64)


def _associated(session_id: str, request_id: int) -> bytes:
    return b"ppinfer v1 result\0" + session_id.encode("utf-8") + struct.pack("<Q", request_id)


def seal(k_out: bytes, session_id: str, request_id: int, plaintext: bytes) -> bytes:
    """Encrypt and authenticate a result for the client (B's side)."""
    nonce = _nonce(_SEAL_DOMAIN, request_id)
    return ChaCha20Poly1305(k_out).encrypt(nonce, plaintext, _associated(session_id, request_id))


def open_sealed(k_out: bytes, session_id: str, request_id: int, sealed: bytes) -> bytes:
    """Check and decrypt a sealed result (the client's side)."""
    nonce = _nonce(_SEAL_DOMAIN, request_id)
    try:
        return ChaCha20Poly1305(k_out).decrypt(nonce, sealed, _associated(session_id, request_id))
    except InvalidTag as error:
        raise SealError(
            f"result of request {request_id} failed authentication: "
            "altered, or not for this session"
        ) from error
