"""What an operator asks model server A's admin listener: its counters (GetStats)."""

from __future__ import annotations

import grpc

from ppinfer.rpc.tls import ChannelTls
from ppinfer.v1 import model_service_pb2_grpc, tensors_pb2

__all__ = ["read_stats"]


def read_stats(admin: str, tls: ChannelTls | None, timeout: float = 30.0) -> dict[str, int]:
    """A's and B's counters from A's admin listener at HOST:PORT (plaintext without ``tls``)."""
    channel = grpc.secure_channel(admin, tls.credentials()) if tls else grpc.insecure_channel(admin)
    with channel:
        stats = model_service_pb2_grpc.ModelServiceStub(channel).GetStats(
            tensors_pb2.StatsRequest(), timeout=timeout
        )
    return dict(stats.counters)
