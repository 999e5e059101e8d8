"""Session cryptography shared by the client and the key server B (no Paillier here).

- Fingerprint: what a client pins. It covers every public key of B the client relies on
  (the Paillier modulus n and the static X25519 key), and the client recomputes it from
  the bytes it receives, so a model server cannot swap in a key of its own.
- Key agreement: the client's ephemeral X25519 key with B's static X25519 key, then
  HKDF-SHA256 over the shared secret, salted with 32 fresh bytes B draws for the session
  and bound to both public keys, the fingerprint and the session id, gives ``k_mask``
  (AEAD key for the tickets) and ``k_out`` (AEAD key for results). B's fresh salt means a
  replayed client key never gives the same session keys twice.
- Tickets: B makes each request entry ahead of any session around a fresh 32-byte mask
  seed, and hands the seed to the client sealed under ``k_mask`` (ChaCha20-Poly1305, nonce
  from the request id the entry is bound to, associated data binding session and request).
- Input masks: r = ChaCha20(seed, zero nonce) read as uint64 and cut to ``mask_bits``
  bits: uniform in [0, 2^mask_bits). A seed is drawn once and bound to one request, once.
- Results: ChaCha20-Poly1305 under ``k_out``; the nonce comes from the request id (unique
  in the session, enforced by B) and the associated data binds session and request.

This module is on the client path: it needs ``cryptography`` and numpy only.
"""

from __future__ import annotations

import hashlib
import secrets
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

from ppinfer.encoding.numerics import MAX_MASK_BITS
from ppinfer.errors import PPInferError

__all__ = [
    "SALT_BYTES",
    "SEED_BYTES",
    "X25519_KEY_BYTES",
    "SealError",
    "SessionKeys",
    "client_ephemeral",
    "client_session_keys",
    "input_mask",
    "key_server_fingerprint",
    "new_salt",
    "new_seed",
    "open_sealed",
    "open_ticket",
    "public_bytes",
    "seal",
    "seal_ticket",
    "seed_mask",
    "server_session_keys",
]

X25519_KEY_BYTES = 32
#: B's fresh contribution to every session's key derivation.
SALT_BYTES = 32
#: An entry's input-mask seed.
SEED_BYTES = 32
_FINGERPRINT_DOMAIN = b"ppinfer key server v2\0"
_HKDF_INFO = b"ppinfer v3 session keys\0"
#: Longest session id (A draws 32 hex characters).
MAX_SESSION_ID_CHARS = 128
_MASK_DOMAIN = b"mask"
_SEAL_DOMAIN = b"seal"
_TICKET_DOMAIN = b"tick"


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


def key_server_fingerprint(paillier_n: bytes, x25519_public: bytes) -> str:
    """Hex SHA-256 over B's Paillier modulus (big-endian, as sent) and its X25519 key."""
    if len(x25519_public) != X25519_KEY_BYTES:
        raise PPInferError(
            f"an X25519 public key is {X25519_KEY_BYTES} bytes, got {len(x25519_public)}"
        )
    digest = hashlib.sha256(_FINGERPRINT_DOMAIN)
    digest.update(struct.pack("<I", len(paillier_n)) + paillier_n + x25519_public)
    return digest.hexdigest()


def new_salt() -> bytes:
    """B's fresh salt for one session (OS CSPRNG)."""
    return secrets.token_bytes(SALT_BYTES)


def new_seed() -> bytes:
    """A fresh input-mask seed for one request entry (OS CSPRNG)."""
    return secrets.token_bytes(SEED_BYTES)


def _derive(
    shared: bytes,
    client_public: bytes,
    server_public: bytes,
    fingerprint: str,
    session_id: str,
    salt: bytes,
) -> SessionKeys:
    if len(salt) != SALT_BYTES:
        raise PPInferError(f"a session salt is {SALT_BYTES} bytes, got {len(salt)}")
    sid = session_id.encode("utf-8")
    if not 1 <= len(sid) <= MAX_SESSION_ID_CHARS:
        raise PPInferError(f"session id must be 1 to {MAX_SESSION_ID_CHARS} bytes")
    context = (
        _HKDF_INFO
        + client_public
        + server_public
        + fingerprint.encode("ascii")
        + struct.pack("<H", len(sid))
        + sid
    )
    material = HKDF(algorithm=hashes.SHA256(), length=64, salt=salt, info=context).derive(shared)
    return SessionKeys(k_mask=material[:32], k_out=material[32:])


def _load_peer(raw: bytes) -> X25519PublicKey:
    if len(raw) != X25519_KEY_BYTES:
        raise PPInferError(f"an X25519 public key is {X25519_KEY_BYTES} bytes, got {len(raw)}")
    return X25519PublicKey.from_public_bytes(raw)


def _exchange(own: X25519PrivateKey, peer: bytes) -> bytes:
    try:
        return own.exchange(_load_peer(peer))
    except ValueError as error:  # the all-zero shared secret of a low-order point
        raise PPInferError(
            "the peer's X25519 public key is a low-order point (no shared secret); "
            "use a freshly generated key"
        ) from error


def client_ephemeral() -> tuple[X25519PrivateKey, bytes]:
    """A fresh ephemeral key for one session, and its public bytes to send."""
    ephemeral = X25519PrivateKey.generate()
    return ephemeral, public_bytes(ephemeral.public_key())


def client_session_keys(
    ephemeral: X25519PrivateKey,
    server_public: bytes,
    fingerprint: str,
    session_id: str,
    salt: bytes,
) -> SessionKeys:
    """The client's side, once A has relayed B's salt and the session id."""
    shared = _exchange(ephemeral, server_public)
    own_public = public_bytes(ephemeral.public_key())
    return _derive(shared, own_public, server_public, fingerprint, session_id, salt)


def server_session_keys(
    static: X25519PrivateKey,
    client_public: bytes,
    fingerprint: str,
    session_id: str,
    salt: bytes,
) -> SessionKeys:
    """B's side: the same session keys from its static key and the client's ephemeral key."""
    shared = _exchange(static, client_public)
    own_public = public_bytes(static.public_key())
    return _derive(shared, client_public, own_public, fingerprint, session_id, salt)


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


def seed_mask(seed: bytes, count: int, mask_bits: int) -> npt.NDArray[np.int64]:
    """The input mask r an entry's seed gives: ``count`` values in [0, 2^mask_bits)."""
    if len(seed) != SEED_BYTES:
        raise PPInferError(f"a mask seed is {SEED_BYTES} bytes, got {len(seed)}")
    return input_mask(seed, 0, count, mask_bits)


def _associated(session_id: str, request_id: int, domain: bytes = b"result") -> bytes:
    return (
        b"ppinfer v1 " + domain + b"\0" + session_id.encode("utf-8")
        + struct.pack("<Q", request_id)
    )  # fmt: skip


def seal_ticket(k_mask: bytes, session_id: str, request_id: int, seed: bytes) -> bytes:
    """B's side: the seed of the entry bound to ``request_id``, sealed for the client."""
    nonce = _nonce(_TICKET_DOMAIN, request_id)
    associated = _associated(session_id, request_id, b"ticket")
    return ChaCha20Poly1305(k_mask).encrypt(nonce, seed, associated)


def open_ticket(k_mask: bytes, session_id: str, request_id: int, ticket: bytes) -> bytes:
    """The client's side: the mask seed of request ``request_id``, checked."""
    nonce = _nonce(_TICKET_DOMAIN, request_id)
    try:
        seed = ChaCha20Poly1305(k_mask).decrypt(
            nonce, ticket, _associated(session_id, request_id, b"ticket")
        )
    except InvalidTag as error:
        raise SealError(
            f"the ticket of request {request_id} failed authentication: "
            "altered, or not for this session"
        ) from error
    if len(seed) != SEED_BYTES:
        raise SealError(f"the ticket of request {request_id} holds no {SEED_BYTES}-byte seed")
    return seed


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
