"""TLS material for gRPC: PEM files read and checked, turned into grpc credentials.

Client↔A is TLS (the client checks A's certificate against a CA); A↔B is mutual TLS (each
presents a certificate; A checks that B's names the key server, B that A's names the model
server, see :mod:`ppinfer.rpc.peer_check`). Plaintext is only ever what a caller asks
for explicitly (``insecure``). Client-safe: grpc and cryptography only.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from ppinfer.errors import KeyFileError

__all__ = ["ChannelTls", "ServerTls", "read_certificate", "read_private_key"]

PathLike = str | os.PathLike[str]


def _read(path: PathLike, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise KeyFileError(f"cannot read the {what} {path}: {error.strerror}") from error


def read_certificate(path: PathLike, what: str = "certificate") -> bytes:
    """A PEM file of one or more certificates, checked to parse."""
    data = _read(path, what)
    try:
        x509.load_pem_x509_certificates(data)
    except ValueError as error:
        raise KeyFileError(f"the {what} {path} is not a PEM certificate: {error}") from error
    return data


def read_private_key(path: PathLike, what: str = "TLS private key") -> bytes:
    """A PEM private key (unencrypted), checked to parse."""
    data = _read(path, what)
    try:
        serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise KeyFileError(
            f"the {what} {path} is not an unencrypted PEM private key: {error}"
        ) from error
    return data


def _check_pair(cert: bytes, key: bytes, cert_path: PathLike, key_path: PathLike) -> None:
    """A certificate and the private key that goes with it, or a clear refusal."""
    certificate = x509.load_pem_x509_certificates(cert)[0]
    private = serialization.load_pem_private_key(key, password=None)
    raw = serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    if certificate.public_key().public_bytes(*raw) != private.public_key().public_bytes(*raw):
        raise KeyFileError(
            f"the TLS key {key_path} does not belong to the certificate {cert_path}: give the "
            "key the certificate was issued for"
        )


@dataclass(frozen=True)
class ServerTls:
    """What a server listens with; ``client_ca`` set means clients must show a certificate
    it signed (mutual TLS), and ``client_name`` the common name that certificate must bear."""

    cert: bytes
    key: bytes
    client_ca: bytes | None = None
    client_name: str | None = None

    @classmethod
    def from_files(
        cls,
        cert: PathLike,
        key: PathLike,
        client_ca: PathLike | None = None,
        client_name: str | None = None,
    ) -> ServerTls:
        certificate, private = read_certificate(cert, "TLS certificate"), read_private_key(key)
        _check_pair(certificate, private, cert, key)
        return cls(
            certificate,
            private,
            read_certificate(client_ca, "client CA") if client_ca else None,
            client_name,
        )

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)],
            root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


@dataclass(frozen=True)
class ChannelTls:
    """What a channel trusts (``ca``; None: the system's roots), the name the server's
    certificate must bear if not the address's host, and our own certificate if asked."""

    ca: bytes | None = None
    server_name: str | None = None
    cert: bytes | None = None
    key: bytes | None = None

    @classmethod
    def from_files(
        cls,
        ca: PathLike | None = None,
        server_name: str | None = None,
        cert: PathLike | None = None,
        key: PathLike | None = None,
    ) -> ChannelTls:
        if (cert is None) != (key is None):
            raise KeyFileError("a client certificate needs its key, and a key its certificate")
        own_cert = own_key = None
        if cert is not None and key is not None:
            own_cert, own_key = read_certificate(cert, "TLS certificate"), read_private_key(key)
            _check_pair(own_cert, own_key, cert, key)
        return cls(
            read_certificate(ca, "CA certificate") if ca else None,
            server_name,
            own_cert,
            own_key,
        )

    def credentials(self) -> grpc.ChannelCredentials:
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def options(self) -> list[tuple[str, str]]:
        """Channel options: check the server's certificate for ``server_name``."""
        if not self.server_name:
            return []
        return [("grpc.ssl_target_name_override", self.server_name)]
