"""``ppinfer certs``: a development CA and certificates for the two daemons on one host.

The CA signs two certificates, each naming its holder so that a peer can tell them apart
even though one CA signed both:

- ``model-server.crt``: A's, for clients (TLS) and for B (A's client certificate in
  mutual TLS). Common name and DNS name ``ppinfer-model-server``.
- ``key-server.crt``: B's, for A only. Common name and DNS name ``ppinfer-key-server``.

A verifies that B's certificate names ``ppinfer-key-server``; B accepts only a client
certificate whose common name is ``ppinfer-model-server``. Both also carry the hosts
given (``localhost`` and ``127.0.0.1`` by default) so clients can check A by address.
Secret keys are written 0600. For production, use certificates from your own CA with the
same names (or configure the names, see docs/PROTOCOL.md section 10).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ppinfer.encoding.documents import refuse_existing
from ppinfer.errors import KeyFileError

__all__ = [
    "CA_FILE",
    "KEY_SERVER_NAME",
    "MODEL_SERVER_NAME",
    "DevTls",
    "make_dev_certificates",
]

CA_FILE = "ca.crt"
MODEL_SERVER_NAME = "ppinfer-model-server"
KEY_SERVER_NAME = "ppinfer-key-server"
_FILES = {
    MODEL_SERVER_NAME: "model-server",
    KEY_SERVER_NAME: "key-server",
}


def _name(common_name: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "ppinfer development"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )


def _write(path: Path, data: bytes, mode: int) -> None:
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.unlink(missing_ok=True)
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _sans(common_name: str, hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = [x509.DNSName(common_name)]
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def make_dev_certificates(
    folder: Path, hosts: list[str] | None = None, days: int = 365, overwrite: bool = False
) -> list[Path]:
    """Write ca.crt (and ca.key), and a certificate and key for each daemon into ``folder``."""
    hosts = hosts if hosts is not None else ["localhost", "127.0.0.1"]
    if days < 1:
        raise KeyFileError(f"--days must be at least 1, not {days}")
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / CA_FILE, folder / "ca.key"]
    for stem in _FILES.values():
        paths += [folder / f"{stem}.crt", folder / f"{stem}.key"]
    if not overwrite:
        refuse_existing(*paths)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = _name("ppinfer development CA")
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    _write(paths[0], ca.public_bytes(serialization.Encoding.PEM), 0o644)
    _write(paths[1], _key_pem(ca_key), 0o600)
    for common_name, stem in _FILES.items():
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name))
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(_sans(common_name, hosts)), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write(folder / f"{stem}.crt", certificate.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(folder / f"{stem}.key", _key_pem(key), 0o600)
    return paths


@dataclass(frozen=True)
class DevTls:
    """A folder from :func:`make_dev_certificates`, as the flags each command takes."""

    folder: Path

    @classmethod
    def create(cls, folder: Path) -> DevTls:
        make_dev_certificates(folder)
        return cls(folder)

    @property
    def ca(self) -> Path:
        return self.folder / CA_FILE

    def key_server_flags(self) -> list[str]:
        return [
            "--tls-cert", str(self.folder / "key-server.crt"),
            "--tls-key", str(self.folder / "key-server.key"),
            "--client-ca", str(self.ca),
        ]  # fmt: skip

    def model_server_flags(self) -> list[str]:
        return [
            "--tls-cert", str(self.folder / "model-server.crt"),
            "--tls-key", str(self.folder / "model-server.key"),
            "--key-server-ca", str(self.ca),
        ]  # fmt: skip

    def client_flags(self) -> list[str]:
        return ["--ca", str(self.ca)]
