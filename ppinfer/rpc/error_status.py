"""How errors leave a server: every PPInferError as its gRPC status with its message."""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc

from ppinfer.errors import PPInferError

__all__ = ["abort", "status_code", "status_name"]

log = logging.getLogger("ppinfer.servers")


def status_code(name: str) -> grpc.StatusCode:
    """The grpc.StatusCode called ``name``; INTERNAL for a name grpc does not know."""
    return grpc.StatusCode.__members__.get(name, grpc.StatusCode.INTERNAL)


def status_name(code: int) -> str:
    """The name of a numeric status code, as carried in ppinfer.v1.Error."""
    for member in grpc.StatusCode:
        if member.value[0] == code:
            return str(member.name)
    return "UNKNOWN"


def abort(context: grpc.ServicerContext, error: BaseException) -> NoReturn:
    """End the call with the error's status; an unexpected error is logged, not leaked."""
    if isinstance(error, PPInferError):
        context.abort(status_code(error.status), str(error))
    log.exception("unexpected error in a call", exc_info=error)
    context.abort(grpc.StatusCode.INTERNAL, "internal server error; the server log has details")
    raise AssertionError("grpc's context.abort() always raises")
