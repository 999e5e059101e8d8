"""The key server's static X25519 key in versioned JSON files (secret part mode 0600)."""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from ppinfer.encoding.documents import read_document, refuse_existing, write_document
from ppinfer.errors import KeyFileError
from ppinfer.protocol.session_keys import X25519_KEY_BYTES, public_bytes

__all__ = ["X25519_PRIVATE_FILE", "X25519_PUBLIC_FILE", "load_x25519", "save_x25519"]

X25519_PUBLIC_FILE = "x25519.pub.json"
X25519_PRIVATE_FILE = "x25519.key.json"
_PRIVATE_FORMAT = "ppinfer-x25519-private"
_PUBLIC_FORMAT = "ppinfer-x25519-public"
_VERSION = 1


def save_x25519(
    directory: Path, key: X25519PrivateKey, overwrite: bool = False
) -> tuple[Path, Path]:
    """Write the static key pair into ``directory``; refuse to replace one unless ``overwrite``."""
    raw = key.private_bytes(
        serialization.Encoding.Raw,
        serialization.PrivateFormat.Raw,
        serialization.NoEncryption(),
    )
    public_hex = public_bytes(key.public_key()).hex()
    public_path, private_path = directory / X25519_PUBLIC_FILE, directory / X25519_PRIVATE_FILE
    if not overwrite:
        refuse_existing(public_path, private_path)
    write_document(
        private_path,
        {
            "format": _PRIVATE_FORMAT,
            "version": _VERSION,
            "private": raw.hex(),
            "public": public_hex,
        },
        mode=0o600,
    )
    write_document(
        public_path,
        {"format": _PUBLIC_FORMAT, "version": _VERSION, "public": public_hex},
        mode=0o644,
    )
    return public_path, private_path


def load_x25519(path: Path) -> X25519PrivateKey:
    """Read the static secret key and check that its stored public half matches."""
    document = read_document(path, (_PRIVATE_FORMAT,), _VERSION)
    try:
        raw = bytes.fromhex(str(document["private"]))
        stored_public = bytes.fromhex(str(document["public"]))
    except (KeyError, ValueError) as error:
        raise KeyFileError(f"{path}: missing or non-hexadecimal key fields") from error
    if len(raw) != X25519_KEY_BYTES:
        raise KeyFileError(f"{path}: an X25519 key is {X25519_KEY_BYTES} bytes, got {len(raw)}")
    key = X25519PrivateKey.from_private_bytes(raw)
    if public_bytes(key.public_key()) != stored_public:
        raise KeyFileError(f"{path}: the stored public key does not match; the file is tampered")
    return key
