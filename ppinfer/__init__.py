"""ppinfer: private inference for constrained clients with two non-colluding servers.

The layers, bottom up: :mod:`ppinfer.encoding`, :mod:`ppinfer.paillier`,
:mod:`ppinfer.compiler`, :mod:`ppinfer.protocol` (the parties, no I/O), :mod:`ppinfer.rpc`
(the only grpc), :mod:`ppinfer.daemons` and :mod:`ppinfer.client` (the stub's entry
point), :mod:`ppinfer.cli`. This module imports only what the client path needs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ppinfer.encoding.fixedpoint import FixedPoint
from ppinfer.encoding.packing import SlotLayout
from ppinfer.errors import MissingDependencyError, PPInferError

if TYPE_CHECKING:
    from ppinfer.compiler.plan import Plan

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
    try:
        from ppinfer.compiler import compile_model
    except ImportError as error:
        raise _not_in_client_wheel("compile", error) from error
    return compile_model(model, input_shape, **options).plan


def save_plan(plan: Plan, path: str | os.PathLike[str], overwrite: bool = False) -> None:
    """Write ``plan`` to ``path`` (a ``.ppi`` file, what ``serve-model --model`` takes);
    an existing file is replaced only with ``overwrite``."""
    try:
        from ppinfer.compiler.plan import save_plan as write
    except ImportError as error:
        raise _not_in_client_wheel("save_plan", error) from error
    write(plan, Path(path), overwrite=overwrite)


def load_plan(path: str | os.PathLike[str]) -> Plan:
    """A plan written by :func:`save_plan` or ``ppinfer compile``, checked."""
    try:
        from ppinfer.compiler.plan import load_plan as read
    except ImportError as error:
        raise _not_in_client_wheel("load_plan", error) from error
    return read(Path(path))


def _not_in_client_wheel(name: str, error: ImportError) -> MissingDependencyError:
    """The client-only wheel (ppinfer-client) has no compiler: say what to install."""
    return MissingDependencyError(
        f"ppinfer.{name} needs the full install: pip install 'ppinfer[torch]' ({error.name})"
    )
