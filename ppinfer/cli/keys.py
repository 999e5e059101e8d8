"""``ppinfer keygen``, ``ppinfer certs`` and ``ppinfer info``: key and certificate
files for the daemons, and what this install has."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ppinfer.cli.extras import KEY_SIZES, require_server_extra

__all__ = ["add_parser"]


def _keygen(args: argparse.Namespace) -> int:
    require_server_extra("ppinfer keygen")
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from ppinfer.encoding.documents import refuse_existing
    from ppinfer.paillier import PRIVATE_KEY_FILE, PUBLIC_KEY_FILE, generate_keypair, save_keypair
    from ppinfer.protocol.session_keys import key_server_fingerprint, public_bytes
    from ppinfer.protocol.x25519_keyfile import X25519_PRIVATE_FILE, X25519_PUBLIC_FILE, save_x25519

    out = Path(args.out)
    if not args.force:  # check all four first, so a refusal never leaves half a key folder
        names = (PUBLIC_KEY_FILE, PRIVATE_KEY_FILE, X25519_PUBLIC_FILE, X25519_PRIVATE_FILE)
        refuse_existing(*(out / name for name in names))
    if args.bits < 2048:
        print(f"warning: {args.bits}-bit keys are for tests and load runs only", file=sys.stderr)
    public, private = generate_keypair(args.bits)
    public_path, private_path = save_keypair(out, public, private, overwrite=args.force)
    static = X25519PrivateKey.generate()
    x25519_public, x25519_private = save_x25519(out, static, overwrite=args.force)
    key_id = key_server_fingerprint(public.n_bytes, public_bytes(static.public_key()))
    print(f"key id    {key_id}  (clients pin it: ppinfer predict --pin KEY_ID)")
    print(f"bits      {public.bits}")
    print(f"public    {public_path} {x25519_public}")
    print(f"secret    {private_path} {x25519_private} (mode 0600)")
    return 0


def _certs(args: argparse.Namespace) -> int:
    from ppinfer.rpc.dev_certificates import make_dev_certificates

    hosts = [host.strip() for host in args.hosts.split(",") if host.strip()]
    paths = make_dev_certificates(Path(args.out), hosts, args.days, overwrite=args.force)
    print("development CA and certificates (keys mode 0600), valid for " + ", ".join(hosts))
    for path in paths:
        print(f"  {path}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from ppinfer.cli.info import collect_info, format_info

    info = collect_info()
    print(json.dumps(info, indent=2) if args.json else format_info(info))
    return 0


def add_parser(commands: Any) -> None:
    """Register keygen, certs and info."""
    keygen = commands.add_parser("keygen", help="make the key server's Paillier key pair")
    keygen.add_argument(
        "--bits",
        type=int,
        default=2048,
        choices=KEY_SIZES,
        help="bit length of the modulus n (default 2048)",
    )
    keygen.add_argument("--out", required=True, metavar="DIR", help="folder for the key files")
    keygen.add_argument("--force", action="store_true", help="replace key files that exist")
    keygen.set_defaults(run=_keygen)

    certs = commands.add_parser(
        "certs", help="make a development CA and TLS certificates for both daemons"
    )
    certs.add_argument("--out", required=True, metavar="DIR", help="folder for the files")
    certs.add_argument(
        "--hosts",
        default="localhost,127.0.0.1",
        metavar="LIST",
        help="comma-separated names and addresses the certificates are valid for",
    )
    certs.add_argument("--days", type=int, default=365, help="validity in days (default 365)")
    certs.add_argument("--force", action="store_true", help="replace files that exist")
    certs.set_defaults(run=_certs)

    info = commands.add_parser("info", help="versions, and whether gmpy2 is active")
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(run=_info)
