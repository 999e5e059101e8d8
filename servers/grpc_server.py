"""One way to build a ppinfer gRPC server: options, health, reflection, listening port."""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from ppinfer.errors import PPInferError
from ppinfer.grpc_options import SERVER_OPTIONS

__all__ = ["create_server"]


def create_server(
    register: Callable[[grpc.Server], None],
    service_name: str,
    listen: str,
    max_workers: int,
) -> tuple[grpc.Server, int]:
    """A server (not yet started) with ``register``'s service, health and reflection.

    ``listen`` is HOST:PORT; port 0 picks a free port, returned beside the server.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="ppinfer-rpc"),
        options=SERVER_OPTIONS,
    )
    register(server)
    health_servicer = health.HealthServicer()
    for name in ("", service_name):
        health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [service_name, reflection.SERVICE_NAME, health.SERVICE_NAME], server
    )
    try:
        port = server.add_insecure_port(listen)
    except RuntimeError as error:
        raise PPInferError(f"cannot listen on {listen}: {error}") from error
    if port == 0:
        raise PPInferError(f"cannot listen on {listen}: the address is taken or invalid")
    logging.getLogger("ppinfer.servers").info("%s listening on port %d", service_name, port)
    return server, port
