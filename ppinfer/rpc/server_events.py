"""What model server A's servicer reports as it works, for whoever watches it.

The daemon passes its Prometheus metrics (:class:`ppinfer.daemons.metrics.Metrics`);
tests and the in-process deployment pass nothing.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["ServerEvents"]


class ServerEvents(Protocol):
    def call_failed(self, status: str) -> None:
        """A call ended with the gRPC status named ``status``."""

    def session_opened(self) -> None: ...

    def session_closed(self) -> None: ...

    def inference_done(self, model: str, mode: str, seconds: float | None) -> None:
        """One inference of ``model`` in ``mode`` ended; ``seconds`` of wall time at A."""
