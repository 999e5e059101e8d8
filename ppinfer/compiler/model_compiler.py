"""``compile_model``: a model (object or file) and an input shape to a plan and its report."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ppinfer.compiler.frontends import model_steps
from ppinfer.compiler.lower import (
    DEFAULT_WEIGHT_BITS,
    MIN_PICKED_WEIGHT_BITS,
    CompileReport,
    Precision,
    lower,
)
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
    with the float model. ``precision.weight_bits`` None (``Precision(weight_bits=None)``)
    picks the narrowest width, from 4 to 16 bits, whose plan agrees with the float model
    on every calibration input (A's offline cost follows the weight bits); without
    calibration data, for a model of one output (a score: there is no argmax to agree
    on), or when no width agrees everywhere, 16. The report says which."""
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
    precision = precision or Precision()
    masks = masks or MaskSettings()
    if precision.weight_bits is not None:
        return lower(steps, shape, name, data, precision, masks)
    return _narrowest(steps, shape, name, data, precision, masks)


def _narrowest(
    steps: Any,
    shape: tuple[int, ...],
    name: str,
    data: npt.NDArray[np.float64] | None,
    precision: Precision,
    masks: MaskSettings,
) -> CompileReport:
    """The plan at the narrowest weight bits with full agreement: a bisection over
    [4, 16], taking agreement as monotone in the width (each width is compiled and
    checked; the answer's own agreement is measured, never assumed)."""

    def at(bits: int) -> CompileReport:
        return lower(steps, shape, name, data, dataclasses.replace(precision, weight_bits=bits),
                     masks)  # fmt: skip

    widest = at(DEFAULT_WEIGHT_BITS)
    reason = None
    if data is None:
        reason = "no calibration data"
    elif widest.plan.outputs < 2:  # every width "agrees" on the argmax of one value
        reason = "one output: no argmax to agree on"
    elif widest.agreement is None or widest.agreement < 1.0:
        reason = "no width agrees on every input"
    if reason is not None:
        return dataclasses.replace(
            widest, weight_bits_choice=f"{DEFAULT_WEIGHT_BITS} (the default: {reason})"
        )
    best, low, high = widest, MIN_PICKED_WEIGHT_BITS, DEFAULT_WEIGHT_BITS
    tried = [DEFAULT_WEIGHT_BITS]
    while low < high:
        middle = (low + high) // 2
        report = at(middle)
        tried.append(middle)
        if report.agreement == 1.0:
            best, high = report, middle
        else:
            low = middle + 1
    return dataclasses.replace(
        best,
        weight_bits_choice=(
            f"{high} (picked: the narrowest of {MIN_PICKED_WEIGHT_BITS}..{DEFAULT_WEIGHT_BITS} "
            f"that agrees on all {best.samples} calibration inputs; tried "
            f"{', '.join(map(str, sorted(tried)))})"
        ),
    )
