"""The compiler's intermediate form: a model as a chain of steps, whatever it came from.

Each frontend (torch modules, TorchScript, ONNX) turns a model into a list of
:class:`Step`: affine maps, exact elementwise functions, max pooling, and the trailing
function the client runs. Every step carries a float64 torch callable, so the lowering
reads matrices and windows off the real operation instead of re-deriving each layer's
formula, and each step's kind is checked against what it computes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ppinfer.compiler.activations import FUNCTIONS, Function
from ppinfer.errors import PPInferError

__all__ = ["CompileError", "Step", "check_function", "elementwise_module"]

Kind = Literal["affine", "elementwise", "maxpool", "client"]
Run = Callable[[Any], Any]


class CompileError(PPInferError):
    """The model cannot be compiled as given; the message names the layer and the reason."""


@dataclass(frozen=True)
class Step:
    label: str  # the layer as the user named it, e.g. "features.0 (Conv2d)"
    kind: Kind
    run: Run  # float64 torch tensor [batch, ...] -> tensor
    function: Function | None = None  # elementwise steps
    client: str = ""  # client steps: "softmax", "log_softmax" or "sigmoid"


#: torch module class names that are affine maps of their input (in eval mode).
AFFINE_MODULES = frozenset(
    {
        "Linear",
        "Conv1d",
        "Conv2d",
        "Conv3d",
        "ConvTranspose1d",
        "ConvTranspose2d",
        "AvgPool1d",
        "AvgPool2d",
        "AvgPool3d",
        "AdaptiveAvgPool1d",
        "AdaptiveAvgPool2d",
        "BatchNorm1d",
        "BatchNorm2d",
        "BatchNorm3d",
        "Flatten",
        "Unflatten",
        "Identity",
        "Dropout",
        "Dropout1d",
        "Dropout2d",
        "AlphaDropout",
        "ZeroPad1d",
        "ZeroPad2d",
        "ConstantPad1d",
        "ConstantPad2d",
    }
)

MAXPOOL_MODULES = frozenset({"MaxPool1d", "MaxPool2d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d"})

#: A last Sigmoid is an elementwise step that the lowering hands to the client.
CLIENT_MODULES = {"Softmax": "softmax", "LogSoftmax": "log_softmax"}


def elementwise_module(type_name: str, module: Any) -> Function | None:
    """The exact function a torch activation module computes, or None if it is not one."""
    simple = {
        "ReLU": "relu",
        "Sigmoid": "sigmoid",
        "Tanh": "tanh",
        "SiLU": "silu",
        "Square": "square",
    }
    if type_name in simple:
        return Function(simple[type_name])
    if type_name == "LeakyReLU":
        return Function("leaky_relu", (float(module.negative_slope),))
    if type_name == "ReLU6":
        return Function("hardtanh", (0.0, 6.0))
    if type_name == "Hardtanh":
        return Function("hardtanh", (float(module.min_val), float(module.max_val)))
    if type_name == "GELU":
        return Function("gelu_tanh" if module.approximate == "tanh" else "gelu")
    if type_name == "Softplus":
        return Function("softplus", (float(module.beta), float(module.threshold)))
    if type_name == "PReLU":
        slopes = module.weight.detach().double().cpu().numpy().ravel()
        if slopes.size > 1 and not np.all(slopes == slopes[0]):
            raise CompileError(
                "PReLU with a different slope per channel is not supported: B would have to "
                "learn which channel each masked value belongs to; use one shared slope"
            )
        return Function("leaky_relu", (float(slopes[0]),))
    return None


def check_function(label: str, function: Function, run: Run, shape: tuple[int, ...]) -> None:
    """Check that ``run`` computes ``function`` elementwise (catches a misread parameter)."""
    import torch

    try:
        function.check()
    except PPInferError as error:
        raise CompileError(f"{label}: {error}") from error
    generator = torch.Generator().manual_seed(0)
    probe = torch.randn((4, *shape), generator=generator, dtype=torch.float64) * 4.0
    expected = FUNCTIONS[function.name].real(function.parameters, probe.numpy().ravel())
    actual = run(probe).detach().double().numpy().ravel()
    if actual.shape != expected.shape or not np.allclose(actual, expected, rtol=1e-6, atol=1e-6):
        raise CompileError(
            f"{label} does not compute {function.name}{list(function.parameters) or ''} "
            "elementwise as ppinfer evaluates it"
        )
