"""Compile a PyTorch ``nn.Sequential`` of Linear layers and activations into a plan.

Supported: an optional leading ``Flatten``; ``Linear`` (consecutive ones fuse into one);
ReLU, LeakyReLU, Sigmoid, Tanh and :class:`ppinfer.nn.Square` between them; ``Identity``
and ``Dropout`` (dropped); a trailing Softmax, LogSoftmax or Sigmoid, which the client
runs on the unmasked logits. Anything else is refused with the layer named. Needs torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ppinfer.errors import PPInferError
from ppinfer.fixedpoint import FixedPoint
from ppinfer.numerics import fold_weights
from ppinfer.plan import Activation, Dense, MaskSettings, Plan
from ppinfer.schedule import analyze
from ppinfer.simulate import simulate_batch

__all__ = ["CompileError", "CompileReport", "compile_sequential", "format_report"]


class CompileError(PPInferError):
    """The model cannot be compiled as given; the message names the layer and the reason."""


@dataclass(frozen=True)
class CompileReport:
    plan: Plan
    agreement: float | None  # share of calibration inputs whose argmax matches the float model
    max_logit_error: float | None
    samples: int


def _activation(module: Any, torch_nn: Any, frac_bits: int) -> Activation | None:
    from ppinfer.nn import Square

    if isinstance(module, torch_nn.ReLU):
        return Activation("relu", frac_bits)
    if isinstance(module, torch_nn.LeakyReLU):
        return Activation("leaky_relu", frac_bits, float(module.negative_slope))
    if isinstance(module, torch_nn.Sigmoid):
        return Activation("sigmoid", frac_bits)
    if isinstance(module, torch_nn.Tanh):
        return Activation("tanh", frac_bits)
    if isinstance(module, Square):
        return Activation("square", frac_bits)
    return None


def _weight_frac_bits(weight: npt.NDArray[np.float64], weight_bits: int) -> int:
    largest = float(np.max(np.abs(weight))) if weight.size else 0.0
    top = math.ceil(math.log2(largest)) if largest > 0 else 0
    return weight_bits - 1 - top


def compile_sequential(
    model: Any,
    input_shape: tuple[int, ...],
    name: str,
    calibration: npt.NDArray[np.float64] | None = None,
    input_range: float | None = None,
    input_value_bits: int = 20,
    weight_bits: int = 16,
    activation_frac_bits: int = 16,
    masks: MaskSettings | None = None,
) -> CompileReport:
    """A plan for ``model``; with ``calibration`` inputs, its agreement with the float model."""
    import torch
    from torch import nn

    if not isinstance(model, nn.Sequential):
        raise CompileError(
            f"expected torch.nn.Sequential, got {type(model).__name__}; "
            "this compiler takes Sequential models of Linear layers and activations"
        )
    layers: list[tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]] = []
    activations: list[Activation] = []
    client_activation = ""
    pending_linear = False  # the last layer kept was Linear: a next Linear fuses into it
    modules = list(model.named_children())
    for position, (label, module) in enumerate(modules):
        where = f"layer {label} ({type(module).__name__})"
        if isinstance(module, nn.Flatten) and position == 0:
            continue
        if isinstance(module, (nn.Identity, nn.Dropout)):
            continue
        if isinstance(module, nn.Linear):
            weight = module.weight.detach().double().numpy()
            bias = (
                module.bias.detach().double().numpy()
                if module.bias is not None
                else np.zeros(module.out_features)
            )
            if pending_linear:
                previous_weight, previous_bias = layers[-1]
                layers[-1] = (weight @ previous_weight, weight @ previous_bias + bias)
            else:
                layers.append((weight, bias))
            pending_linear = True
            continue
        last = position == len(modules) - 1
        if last and pending_linear and isinstance(module, (nn.Softmax, nn.LogSoftmax)):
            client_activation = "softmax" if isinstance(module, nn.Softmax) else "log_softmax"
            continue
        if last and pending_linear and isinstance(module, nn.Sigmoid):
            client_activation = "sigmoid"
            continue
        if isinstance(module, (nn.Softmax, nn.LogSoftmax)):
            raise CompileError(f"{where} runs at the client, so it must be the model's last layer")
        activation = _activation(module, nn, activation_frac_bits)
        if activation is None:
            raise CompileError(
                f"{where} is not supported here (Linear layers and elementwise "
                "ReLU, LeakyReLU, Sigmoid, Tanh, Square)"
            )
        if not pending_linear:
            raise CompileError(f"{where}: two activations in a row, or one before any Linear")
        activations.append(activation)
        pending_linear = False
    if not layers or not pending_linear:
        raise CompileError("the model must end with a Linear layer (optionally then Softmax)")

    if input_range is None:
        if calibration is None:
            raise CompileError("give calibration data or an input range to fix the input scale")
        input_range = float(np.max(np.abs(calibration))) or 1.0
    input_frac = input_value_bits - 1 - math.ceil(math.log2(input_range))
    if input_frac < 0:
        raise CompileError(f"inputs up to {input_range:g} need more than {input_value_bits} bits")
    plan = Plan(
        name=name,
        input_shape=tuple(input_shape),
        input_format=FixedPoint(input_frac, input_value_bits),
        dense=tuple(Dense(w, b, _weight_frac_bits(w, weight_bits)) for w, b in layers),
        activations=tuple(activations),
        client_activation=client_activation,
        masks=masks or MaskSettings(),
    )
    if calibration is None:
        return CompileReport(plan, None, None, 0)
    with torch.no_grad():
        reference_model = _logits_model(model, client_activation)
        reference = reference_model(torch.as_tensor(calibration, dtype=torch.float32)).double()
    private = simulate_batch(plan, calibration)
    reference_np = reference.numpy().reshape(private.shape)
    agree = float(np.mean(np.argmax(private, axis=1) == np.argmax(reference_np, axis=1)))
    return CompileReport(
        plan, agree, float(np.max(np.abs(private - reference_np))), len(calibration)
    )


def _logits_model(model: Any, client_activation: str) -> Any:
    """The model without its trailing client-side activation."""
    return model[:-1] if client_activation else model


def format_report(report: CompileReport, key_bits: int = 2048) -> str:
    """The per-layer table ``ppinfer compile`` prints."""
    from ppinfer.packing import SlotLayout

    plan, numerics = report.plan, analyze(report.plan)
    rows = [
        "| layer | shape | weight bits | activation | bits to B | masks | ciphertexts to B |"
        " rounds |",
        "|---|---|---:|---|---:|---|---:|---:|",
    ]
    for index, (layer, info) in enumerate(zip(plan.dense, numerics.layers, strict=True)):
        weights = fold_weights(layer.weight, layer.weight_frac_bits, None)
        # Folding d^-p with d >= 2^min_bits into 2^fold_bits adds p * spread_bits at most.
        folded_extra = info.fold_bits - info.fold_bits // plan.masks.max_bits * plan.masks.min_bits
        weight_bits = int(np.max(np.abs(weights))).bit_length() + 1 + folded_extra
        if info.masked_bits is None:
            layout = SlotLayout.for_key(numerics.sealed_value_bits, key_bits)
            act, bits, masks = "(seal for client)", numerics.sealed_value_bits, "P1 + P2"
        else:
            activation = plan.activations[index]
            layout = SlotLayout.for_key(info.masked_bits, key_bits)
            act, bits = activation.function, info.masked_bits
            masks = "P2 + P3" if activation.power is not None else "P2"
        packed = math.ceil(layer.outputs / layout.slots)
        rows.append(
            f"| dense {index} | {layer.inputs}→{layer.outputs} | {weight_bits} | {act} | "
            f"{bits} | {masks} | {packed} | 1 |"
        )
    lines = [
        f"plan {plan.name!r}: input {plan.input_shape}, "
        f"x^ = round(x * 2^{plan.input_format.frac_bits}), "
        f"|x| <= {plan.input_format.max_abs_real:g}; largest plaintext "
        f"{numerics.max_plaintext_bits} bits",
        *rows,
    ]
    if report.agreement is not None:
        lines.append(
            f"agreement with the float model on {report.samples} calibration inputs: "
            f"{report.agreement:.2%} (max logit error {report.max_logit_error:.2e})"
        )
    return "\n".join(lines)
