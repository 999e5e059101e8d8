"""ppinfer: private inference for constrained clients with two non-colluding servers.

This top-level package holds only what the client path needs (numpy, protobuf, grpcio).
Server-side Paillier arithmetic lives in :mod:`ppinfer.paillier` (``ppinfer[server]``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppinfer.errors import PPInferError
from ppinfer.fixedpoint import FixedPoint
from ppinfer.packing import SlotLayout

if TYPE_CHECKING:
    from ppinfer.plan import Plan

__version__ = "0.1.0"

__all__ = [
    "FixedPoint",
    "PPInferError",
    "SlotLayout",
    "__version__",
    "compile",
    "load_plan",
    "save_plan",
]


def compile(model: Any, input_shape: tuple[int, ...] | None = None, **options: Any) -> Plan:
    """The plan of ``model`` (an ``nn.Module`` or a torch, TorchScript or ONNX file) for
    inputs of ``input_shape`` (an ONNX file declares its own); options as
    :func:`ppinfer.compiler.compile_model`. Needs ``ppinfer[torch]``; imported on first use
    so that the client path never loads torch. Save it with :func:`save_plan`."""
    from ppinfer.compiler import compile_model

    return compile_model(model, input_shape, **options).plan


def save_plan(plan: Plan, path: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Write ``plan`` to ``path`` (a ``.ppi`` file, what ``serve-model --model`` takes);
    an existing file is replaced only with ``overwrite``."""
    from ppinfer.plan import save_plan as write

    write(plan, Path(path), overwrite=overwrite)


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """A plan written by :func:`save_plan` or ``ppinfer compile``, checked."""
    from ppinfer.plan import load_plan as read

    return read(Path(path))
