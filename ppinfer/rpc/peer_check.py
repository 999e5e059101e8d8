"""Mutual TLS, the second half: accept a client certificate only if it names the right peer.

gRPC's handshake already refuses certificates the configured CA did not sign. One CA may
sign several certificates (``ppinfer certs`` signs A's and B's), so B also checks that the
certificate's common name is the model server's: a certificate for another holder, even
from the same CA, gets PERMISSION_DENIED before any handler runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc

from ppinfer.rpc.error_status import log

__all__ = ["PeerNameCheck", "peer_common_names"]


def peer_common_names(context: grpc.ServicerContext) -> list[str]:
    """The common names of the client certificate on this call (empty without one)."""
    names = context.auth_context().get("x509_common_name", [])
    return [name.decode("utf-8", "replace") for name in names]


def _checked(behaviour: Callable[..., Any], allowed: str) -> Callable[..., Any]:
    def call(request: Any, context: grpc.ServicerContext) -> Any:
        names = peer_common_names(context)
        if allowed not in names:
            log.warning(
                "refused a call from %s: its certificate names %s, not %s",
                context.peer(), names or "nobody", allowed,
            )  # fmt: skip
            context.abort(
                grpc.StatusCode.PERMISSION_DENIED,
                f"this server accepts only the certificate of {allowed!r}",
            )
        return behaviour(request, context)

    return call


class PeerNameCheck(grpc.ServerInterceptor):  # type: ignore[misc]
    """Wrap the handlers of ``service`` so that each call first checks the peer's name."""

    def __init__(self, service: str, allowed: str) -> None:
        self._prefix = f"/{service}/"
        self._allowed = allowed

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None or not details.method.startswith(self._prefix):
            return handler
        wrap = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(handler.request_streaming, handler.response_streaming)]
        behaviour = (
            handler.unary_unary
            or handler.unary_stream
            or handler.stream_unary
            or handler.stream_stream
        )
        return wrap(
            _checked(behaviour, self._allowed),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
