"""``compile_model``: a model (object or file) and an input shape to a plan and its report."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ppinfer.compiler.frontends import model_steps
from ppinfer.compiler.lower import CompileReport, Precision, lower
from ppinfer.compiler.plan import MaskSettings
from ppinfer.compiler.steps import CompileError

__all__ = ["compile_model"]


def compile_model(
    model: Any,
    input_shape: tuple[int, ...] | None = None,
    name: str | None = None,
    calibration: npt.ArrayLike | None = None,
    precision: Precision | None = None,
    masks: MaskSettings | None = None,
) -> CompileReport:
    """Compile ``model`` (an ``nn.Module``, or a path to a torch, TorchScript or ``.onnx``
    file) for inputs of ``input_shape`` (without the batch axis). With ``calibration``
    inputs, activation precisions are fitted to them and the report gives the agreement
    with the float model."""
    steps, declared = model_steps(model)
    shape = tuple(input_shape) if input_shape is not None else declared
    if shape is None:
        raise CompileError("give the input shape (for example 1,8,8 for one 8x8 channel)")
    if declared is not None and shape != declared:
        raise CompileError(f"the model declares input shape {declared}, not {shape}")
    if name is None:
        name = Path(model).stem if isinstance(model, (str, Path)) else type(model).__name__
    data = None if calibration is None else np.asarray(calibration, dtype=np.float64)
    if data is not None and data.shape[1:] != shape:
        if data.ndim < 2 or data[0].size != math.prod(shape):
            raise CompileError(f"calibration inputs of shape {data.shape[1:]} are not {shape}")
        data = data.reshape(len(data), *shape)
    return lower(steps, shape, name, data, precision or Precision(), masks or MaskSettings())
