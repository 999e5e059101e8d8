"""ppinfer: private inference for constrained clients with two non-colluding servers.

This top-level package holds only what the client path needs (numpy, protobuf, grpcio).
Server-side Paillier arithmetic lives in :mod:`ppinfer.paillier` (``ppinfer[server]``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ppinfer.errors import PPInferError
from ppinfer.fixedpoint import FixedPoint
from ppinfer.packing import SlotLayout

if TYPE_CHECKING:
    from ppinfer.plan import Plan

__version__ = "0.1.0"

__all__ = ["FixedPoint", "PPInferError", "SlotLayout", "__version__", "compile"]


def compile(model: Any, input_shape: tuple[int, ...], **options: Any) -> Plan:
    """The plan of ``model`` (an ``nn.Module`` or a torch, TorchScript or ONNX file) for
    inputs of ``input_shape``; options as :func:`ppinfer.compiler.compile_model`. Needs
    ``ppinfer[torch]``; imported on first use so that the client path never loads torch."""
    from ppinfer.compiler import compile_model

    return compile_model(model, input_shape, **options).plan
