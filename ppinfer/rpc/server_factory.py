"""One way to build a ppinfer gRPC server: options, health, reflection, listening port."""

from __future__ import annotations

import errno
import logging
import socket
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ppinfer.errors import PPInferError
from ppinfer.rpc.channel_options import SERVER_OPTIONS
from ppinfer.rpc.peer_check import PeerNameCheck
from ppinfer.rpc.tls import ServerTls

__all__ = ["Health", "Listening", "create_server"]

log = logging.getLogger("ppinfer.servers")


class Health:
    """The server's grpc.health.v1 status, for the whole server ("") and its service."""

    def __init__(self, service_name: str) -> None:
        self.servicer = health.HealthServicer()
        self._names = ("", service_name)
        self.serving = False
        self.set(False)

    def set(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING
            if serving
            else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in self._names:
            self.servicer.set(name, status)
        self.serving = serving

    def shut_down(self) -> None:
        """NOT_SERVING for good: watchers are told, later sets are ignored."""
        self.serving = False
        self.servicer.enter_graceful_shutdown()


@dataclass
class Listening:
    server: grpc.Server
    port: int
    health: Health


def _bind_problem(listen: str) -> str:
    """Why ``listen`` could not be bound, as far as a plain socket can tell."""
    host, _, port = listen.rpartition(":")
    if not port.isdigit() or not host:
        return "not a HOST:PORT address"
    family = socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host.strip("[]"), int(port)))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return "address in use"
            return error.strerror or str(error)
    return "gRPC could not bind it"


def create_server(
    register: Callable[[grpc.Server], None],
    service_name: str,
    listen: str,
    max_workers: int,
    tls: ServerTls | None,
) -> Listening:
    """A server (not yet started) with ``register``'s service, health and reflection.

    ``listen`` is HOST:PORT; port 0 picks a free port. ``tls`` None listens in plaintext
    (only ever when an operator asked for it with --insecure). With ``tls.client_name``,
    calls to ``service_name`` need a client certificate bearing that common name. Health
    starts NOT_SERVING: the daemon sets it once it can serve.
    """
    interceptors = []
    if tls is not None and tls.client_name:
        interceptors.append(PeerNameCheck(service_name, tls.client_name))
    if max_workers < 1:
        raise PPInferError(f"workers must be at least 1, not {max_workers}")
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ppinfer-rpc"),
        options=SERVER_OPTIONS,
        interceptors=interceptors,
        # A call past the thread count is refused at once (RESOURCE_EXHAUSTED), not queued
        # behind streams that may hold their threads for hours.
        maximum_concurrent_rpcs=max_workers,
    )
    register(server)
    health_status = Health(service_name)
    health_pb2_grpc.add_HealthServicer_to_server(health_status.servicer, server)
    reflection.enable_server_reflection(
        [service_name, reflection.SERVICE_NAME, health.SERVICE_NAME], server
    )
    try:
        if tls is None:
            port = server.add_insecure_port(listen)
        else:
            port = server.add_secure_port(listen, tls.credentials())
    except RuntimeError as error:
        raise PPInferError(f"cannot listen on {listen}: {_bind_problem(listen)}") from error
    if port == 0:
        raise PPInferError(f"cannot listen on {listen}: {_bind_problem(listen)}")
    log.info(
        "%s listening on port %d (%s)",
        service_name, port, "plaintext" if tls is None else "TLS",
    )  # fmt: skip
    return Listening(server, port, health_status)
