"""Model server A's admin listener: GetStats for operators, on an address of its own.

Sessions are never served here (the generated base class answers UNIMPLEMENTED), so an
operator can expose statistics to a monitoring network without exposing inference.
"""

from __future__ import annotations

import grpc

from ppinfer.rpc.model_servicer import ModelServicer
from ppinfer.rpc.server_factory import Listening, create_server
from ppinfer.rpc.tls import ServerTls
from ppinfer.v1 import model_service_pb2_grpc, tensors_pb2

__all__ = ["AdminServicer", "create_admin_server"]


class AdminServicer(model_service_pb2_grpc.ModelServiceServicer):
    """The operators' listener: GetStats, and nothing else (the generated base class
    answers UNIMPLEMENTED for sessions)."""

    def __init__(self, servicer: ModelServicer) -> None:
        self._servicer = servicer

    def GetStats(
        self, request: tensors_pb2.StatsRequest, context: grpc.ServicerContext
    ) -> tensors_pb2.Stats:
        return self._servicer.stats_message(context)


def create_admin_server(
    servicer: ModelServicer, listen: str, tls: ServerTls | None = None
) -> Listening:
    """A's admin listener (GetStats for operators), bound to ``listen``, not yet started."""
    return create_server(
        lambda server: model_service_pb2_grpc.add_ModelServiceServicer_to_server(
            AdminServicer(servicer), server
        ),
        "ppinfer.v1.ModelService",
        listen,
        4,
        tls,
    )
