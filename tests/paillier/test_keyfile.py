"""Key files: versioned, secret part 0600, and every kind of damage refused with KeyFileError."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from ppinfer.errors import KeyFileError
from ppinfer.paillier import (
    PRIVATE_KEY_FILE,
    PUBLIC_KEY_FILE,
    PrivateKey,
    PublicKey,
    generate_keypair,
    load_private_key,
    load_public_key,
    save_keypair,
)

Keypair = tuple[PublicKey, PrivateKey]


def test_save_and_load_round_trip(tmp_path: Path, keypair_512: Keypair) -> None:
    public, private = keypair_512
    public_path, private_path = save_keypair(tmp_path, public, private)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600
    assert not stat.S_IMODE(public_path.stat().st_mode) & 0o022  # nobody else may rewrite it
    assert load_public_key(public_path) == public
    loaded = load_private_key(private_path)
    assert (loaded.p, loaded.q) == (private.p, private.q)
    assert load_public_key(private_path) == public
    assert "p" not in json.loads(public_path.read_text())


def test_secret_file_is_0600_even_with_a_permissive_umask(
    tmp_path: Path, keypair_512: Keypair
) -> None:
    import os

    old = os.umask(0)
    try:
        _, private_path = save_keypair(tmp_path, *keypair_512)
    finally:
        os.umask(old)
    assert stat.S_IMODE(private_path.stat().st_mode) == 0o600


def test_existing_keys_are_not_replaced_unless_asked(tmp_path: Path, keypair_512: Keypair) -> None:
    save_keypair(tmp_path, *keypair_512)
    other = generate_keypair(512)
    with pytest.raises(KeyFileError, match="--force"):
        save_keypair(tmp_path, *other)
    assert load_public_key(tmp_path / PUBLIC_KEY_FILE) == keypair_512[0]
    save_keypair(tmp_path, *other, overwrite=True)
    assert load_public_key(tmp_path / PUBLIC_KEY_FILE) == other[0]


def test_static_x25519_key_is_not_replaced_unless_asked(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ppinfer.protocol.session_keys import public_bytes
    from ppinfer.protocol.x25519_keyfile import X25519_PRIVATE_FILE, load_x25519, save_x25519

    first = X25519PrivateKey.generate()
    save_x25519(tmp_path, first)
    with pytest.raises(KeyFileError, match="--force"):
        save_x25519(tmp_path, X25519PrivateKey.generate())
    kept = load_x25519(tmp_path / X25519_PRIVATE_FILE)
    assert public_bytes(kept.public_key()) == public_bytes(first.public_key())
    save_x25519(tmp_path, X25519PrivateKey.generate(), overwrite=True)
    replaced = load_x25519(tmp_path / X25519_PRIVATE_FILE)
    assert public_bytes(replaced.public_key()) != public_bytes(first.public_key())


def _tamper(path: Path, **changes: object) -> None:
    document = json.loads(path.read_text())
    document.update(changes)
    path.write_text(json.dumps(document))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"version": 2}, "version"),
        ({"format": "something-else"}, "not a ppinfer-paillier-private file"),
        ({"key_id": "00" * 32}, "does not match"),
        ({"bits": 1024}, "does not match"),
        ({"p": "7"}, "p \\* q does not equal n"),
        ({"q": "zz"}, "not hexadecimal"),
        ({"p": None}, "missing"),
    ],
)
def test_tampered_secret_key_is_refused(
    tmp_path: Path, keypair_512: Keypair, changes: dict[str, object], message: str
) -> None:
    _, private_path = save_keypair(tmp_path, *keypair_512)
    _tamper(private_path, **changes)
    with pytest.raises(KeyFileError, match=message):
        load_private_key(private_path)


def test_swapped_modulus_is_refused(tmp_path: Path, keypair_512: Keypair) -> None:
    public_path, private_path = save_keypair(tmp_path, *keypair_512)
    other_public, _ = generate_keypair(512)
    _tamper(public_path, n=format(other_public.n, "x"))
    with pytest.raises(KeyFileError, match="does not match"):
        load_public_key(public_path)
    # A forger who also recomputes the key id cannot make p * q match the new n.
    _tamper(private_path, n=format(other_public.n, "x"), key_id=other_public.key_id)
    with pytest.raises(KeyFileError, match="p \\* q"):
        load_private_key(private_path)


def test_composite_factors_are_refused(tmp_path: Path) -> None:
    # n = 15 * 77 factors as p=15, q=77 (neither prime) with a consistent key id.
    public = PublicKey(15 * 77)
    document = {
        "format": "ppinfer-paillier-private",
        "version": 1,
        "bits": public.bits,
        "n": format(public.n, "x"),
        "key_id": public.key_id,
        "p": format(15, "x"),
        "q": format(77, "x"),
    }
    path = tmp_path / PRIVATE_KEY_FILE
    path.write_text(json.dumps(document))
    with pytest.raises(KeyFileError, match="not prime"):
        load_private_key(path)


@pytest.mark.parametrize("content", ["", "{not json", "[1, 2]", '{"version": 1}'])
def test_garbage_files_are_refused(tmp_path: Path, content: str) -> None:
    path = tmp_path / PUBLIC_KEY_FILE
    path.write_text(content)
    with pytest.raises(KeyFileError):
        load_public_key(path)


def test_missing_file_is_a_key_file_error(tmp_path: Path) -> None:
    with pytest.raises(KeyFileError, match="cannot read"):
        load_private_key(tmp_path / "absent.json")
