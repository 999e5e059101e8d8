"""gRPC channel and server options used by every ppinfer endpoint, with their units.

Chunks carry at most 1 MiB of ciphertexts (ppinfer.rpc.tensor_messages.DEFAULT_CHUNK_BYTES);
messages are allowed 8 MiB so a chunk plus its envelope always fits with room to spare, while a
peer still cannot make a server buffer an unbounded message.
"""

from __future__ import annotations

__all__ = ["CHANNEL_OPTIONS", "MAX_MESSAGE_BYTES", "SERVER_OPTIONS"]

#: Largest gRPC message sent or received, in bytes.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024

CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),  # bytes
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),  # bytes
    ("grpc.keepalive_time_ms", 30_000),  # ms between pings on an idle connection
    ("grpc.keepalive_timeout_ms", 10_000),  # ms to wait for a ping's answer
    ("grpc.keepalive_permit_without_calls", 1),  # ping with no call in flight (long sessions)
]

SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),  # bytes
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),  # bytes
    ("grpc.keepalive_time_ms", 30_000),  # ms
    ("grpc.keepalive_timeout_ms", 10_000),  # ms
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),  # ms: accept the clients' pings
    ("grpc.keepalive_permit_without_calls", 1),
    # Off (0/1): gRPC sets SO_REUSEPORT by default, so a second daemon on a busy port would
    # start too and the kernel would split new connections between the two.
    ("grpc.so_reuseport", 0),
]
