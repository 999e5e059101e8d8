"""Model plans: what model server A evaluates, stored without pickle.

A plan is a chain ``Dense (Activation Dense)*``: float weights with their quantization
(weight fractional bits per layer), the activations B evaluates exactly, the fixed-point
format of the input, and the mask settings. A re-quantizes each hidden layer's weights
per inference to fold the inverse multiplicative masks in, so the float weights are kept.

File format (``.ppi``): a numpy ``.npz`` archive holding ``plan.json`` (format, version,
metadata) and one float64 array per weight and bias; it is read with
``allow_pickle=False``.
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ppinfer.errors import PPInferError
from ppinfer.fixedpoint import FixedPoint
from ppinfer.numerics import ACTIVATIONS

__all__ = [
    "CLIENT_ACTIVATIONS",
    "PLAN_FORMAT",
    "PLAN_VERSION",
    "Activation",
    "Dense",
    "MaskSettings",
    "Plan",
    "PlanError",
    "load_plan",
    "save_plan",
]

PLAN_FORMAT = "ppinfer-plan"
PLAN_VERSION = 1
CLIENT_ACTIVATIONS = ("", "softmax", "log_softmax", "sigmoid")


class PlanError(PPInferError):
    """A plan is malformed, of an unknown version, or cannot be evaluated as asked."""


@dataclass(frozen=True)
class Dense:
    """y = W x + b, with W quantized at 2^weight_frac_bits."""

    weight: npt.NDArray[np.float64]
    bias: npt.NDArray[np.float64]
    weight_frac_bits: int

    @property
    def inputs(self) -> int:
        return int(self.weight.shape[1])

    @property
    def outputs(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class Activation:
    """An exact elementwise function B evaluates; outputs at 2^out_frac_bits."""

    function: str
    out_frac_bits: int
    parameter: float = 0.0

    @property
    def power(self) -> int | None:
        """p with f(d z) = d^p f(z) for d > 0, or None (permutation only)."""
        return ACTIVATIONS[self.function]


@dataclass(frozen=True)
class MaskSettings:
    """sigma: statistical hiding of additive masks; d log-uniform in [2^min, 2^(min+spread))."""

    sigma: int = 40
    min_bits: int = 8
    spread_bits: int = 8

    @property
    def max_bits(self) -> int:
        return self.min_bits + self.spread_bits


@dataclass(frozen=True)
class Plan:
    name: str
    input_shape: tuple[int, ...]
    input_format: FixedPoint
    dense: tuple[Dense, ...]
    activations: tuple[Activation, ...]
    client_activation: str = ""
    masks: MaskSettings = field(default_factory=MaskSettings)

    def __post_init__(self) -> None:
        if not self.dense or len(self.activations) != len(self.dense) - 1:
            raise PlanError("a plan is Dense (Activation Dense)*: one activation between layers")
        inputs = int(np.prod(self.input_shape))
        for index, layer in enumerate(self.dense):
            if layer.weight.ndim != 2 or layer.bias.shape != (layer.outputs,):
                raise PlanError(f"layer {index}: weight must be 2-D and bias match its rows")
            if layer.inputs != inputs:
                raise PlanError(f"layer {index} takes {layer.inputs} inputs but gets {inputs}")
            if not (np.all(np.isfinite(layer.weight)) and np.all(np.isfinite(layer.bias))):
                raise PlanError(f"layer {index} has NaN or infinite weights")
            inputs = layer.outputs
        for activation in self.activations:
            if activation.function not in ACTIVATIONS:
                raise PlanError(f"unknown activation {activation.function!r}")
        if self.client_activation not in CLIENT_ACTIVATIONS:
            raise PlanError(f"unknown client activation {self.client_activation!r}")
        if self.input_format.value_bits + self.masks.sigma > 62:
            raise PlanError(
                f"input of {self.input_format.value_bits} bits plus a {self.masks.sigma}-bit mask "
                "does not fit int64; declare fewer input bits"
            )

    @property
    def outputs(self) -> int:
        return self.dense[-1].outputs


def save_plan(plan: Plan, path: Path) -> None:
    """Write ``plan`` as a versioned ``.ppi`` archive."""
    meta: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "name": plan.name,
        "input_shape": list(plan.input_shape),
        "input_frac_bits": plan.input_format.frac_bits,
        "input_value_bits": plan.input_format.value_bits,
        "weight_frac_bits": [layer.weight_frac_bits for layer in plan.dense],
        "activations": [
            {"function": a.function, "parameter": a.parameter, "out_frac_bits": a.out_frac_bits}
            for a in plan.activations
        ],
        "client_activation": plan.client_activation,
        "masks": {
            "sigma": plan.masks.sigma,
            "min_bits": plan.masks.min_bits,
            "spread_bits": plan.masks.spread_bits,
        },
    }
    arrays: dict[str, npt.NDArray[Any]] = {
        "plan.json": np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    }
    for index, layer in enumerate(plan.dense):
        arrays[f"dense{index}.weight"] = layer.weight.astype(np.float64)
        arrays[f"dense{index}.bias"] = layer.bias.astype(np.float64)
    with path.open("wb") as handle:
        np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy stubs confuse ** with allow_pickle


def load_plan(path: Path) -> Plan:
    """Read and validate a ``.ppi`` plan; never unpickles."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise PlanError(f"cannot read plan {path}: {error}") from error
    try:
        meta = json.loads(arrays["plan.json"].tobytes().decode("utf-8"))
        if meta.get("format") != PLAN_FORMAT:
            raise PlanError(f"{path} is not a ppinfer plan")
        if meta.get("version") != PLAN_VERSION:
            raise PlanError(
                f"{path} is plan version {meta.get('version')!r}; this ppinfer reads "
                f"{PLAN_VERSION}: compile the model again"
            )
        dense = tuple(
            Dense(arrays[f"dense{i}.weight"], arrays[f"dense{i}.bias"], int(bits))
            for i, bits in enumerate(meta["weight_frac_bits"])
        )
        return Plan(
            name=str(meta["name"]),
            input_shape=tuple(int(d) for d in meta["input_shape"]),
            input_format=FixedPoint(int(meta["input_frac_bits"]), int(meta["input_value_bits"])),
            dense=dense,
            activations=tuple(
                Activation(str(a["function"]), int(a["out_frac_bits"]), float(a["parameter"]))
                for a in meta["activations"]
            ),
            client_activation=str(meta["client_activation"]),
            masks=MaskSettings(**{k: int(v) for k, v in meta["masks"].items()}),
        )
    except PlanError:
        raise
    except (KeyError, TypeError, ValueError, UnicodeDecodeError) as error:
        raise PlanError(f"{path} is a damaged plan: {error!r}") from error
