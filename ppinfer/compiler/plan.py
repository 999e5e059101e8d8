"""Model plans: what model server A evaluates, stored without pickle.

A plan is a chain ``Dense (Activation Dense)*``. A ``Dense`` is any affine map W x + b:
fully connected layers, convolutions, average pooling and folded batch normalization are
all lowered to their matrix by the compiler, and consecutive ones are fused; A skips the
zeros. An ``Activation`` is one round trip to B: exact elementwise functions, optionally a
max over windows (max pooling), then more elementwise functions. The plan keeps float
weights with a quantization per layer, because A re-quantizes each hidden layer's weights
per inference to fold the inverse multiplicative masks in.

File format (``.ppi``): a numpy ``.npz`` archive holding ``plan.json`` (format, version,
metadata) and numeric arrays (weights stored sparse when mostly zero); it is read with
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

from ppinfer.compiler.activations import Function, StageSpec, stage_power
from ppinfer.encoding.fixedpoint import FixedPoint
from ppinfer.encoding.numerics import MIN_MASK_SIGMA
from ppinfer.errors import PPInferError

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
PLAN_VERSION = 2
CLIENT_ACTIVATIONS = ("", "softmax", "log_softmax", "sigmoid")
#: Weight matrices are held dense in memory; beyond this many entries, refuse the plan.
MAX_MATRIX_ENTRIES = 64 * 1024 * 1024


class PlanError(PPInferError):
    """A plan is malformed, of an unknown version, or cannot be evaluated as asked."""


@dataclass(frozen=True)
class Dense:
    """y = W x + b, with W quantized at 2^weight_frac_bits; ``label`` names its layers."""

    weight: npt.NDArray[np.float64]
    bias: npt.NDArray[np.float64]
    weight_frac_bits: int
    label: str = ""
    output_shape: tuple[int, ...] = ()

    @property
    def inputs(self) -> int:
        return int(self.weight.shape[1])

    @property
    def outputs(self) -> int:
        return int(self.weight.shape[0])


@dataclass(frozen=True)
class Activation:
    """One round trip to B: ``functions`` elementwise, then max over each row of
    ``windows`` (indices into the inputs; None: no pooling), then ``after``; outputs at
    2^out_frac_bits."""

    functions: tuple[Function, ...]
    out_frac_bits: int
    windows: npt.NDArray[np.int64] | None = None
    after: tuple[Function, ...] = ()
    label: str = ""
    output_shape: tuple[int, ...] = ()

    @property
    def stage(self) -> StageSpec:
        group = 1 if self.windows is None else int(self.windows.shape[1])
        return StageSpec(self.functions, group, self.after)

    @property
    def power(self) -> int | None:
        """p with f(d z) = d^p f(z) for d > 0 (multiplicative masks allowed), or None."""
        return stage_power(self.stage)

    def outputs(self, inputs: int) -> int:
        return inputs if self.windows is None else int(self.windows.shape[0])

    def window_rows(self, inputs: int) -> npt.NDArray[np.int64]:
        """The values B gets, one row per output: the windows, or each input alone."""
        if self.windows is None:
            return np.arange(inputs, dtype=np.int64)[:, None]
        return self.windows

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Activation):
            return NotImplemented
        same_windows = (self.windows is None and other.windows is None) or (
            self.windows is not None
            and other.windows is not None
            and np.array_equal(self.windows, other.windows)
        )
        return same_windows and (
            self.functions,
            self.out_frac_bits,
            self.after,
            self.label,
            self.output_shape,
        ) == (other.functions, other.out_frac_bits, other.after, other.label, other.output_shape)

    __hash__ = None  # type: ignore[assignment]  # holds an array


@dataclass(frozen=True)
class MaskSettings:
    """sigma: statistical hiding of the client's input mask (u = x^ + r must fit int64);
    answer_sigma: of the masks between A and B (stage answers y + t, the output's o + s),
    whose width costs almost nothing; d log-uniform in [2^min, 2^(min+spread))."""

    sigma: int = 40
    min_bits: int = 8
    spread_bits: int = 8
    answer_sigma: int = 64

    def __post_init__(self) -> None:
        if self.sigma < MIN_MASK_SIGMA or self.answer_sigma < MIN_MASK_SIGMA:
            raise PlanError(
                f"masks need at least {MIN_MASK_SIGMA} statistical bits (sigma "
                f"{self.sigma}, answer_sigma {self.answer_sigma})"
            )
        if self.answer_sigma > 256:
            raise PlanError(f"answer_sigma {self.answer_sigma} is past any use (at most 256)")
        if not (self.min_bits >= 1 and self.spread_bits >= 1 and self.max_bits <= 32):
            raise PlanError(
                "multiplicative masks need min_bits >= 1, spread_bits >= 1 and "
                f"min_bits + spread_bits <= 32 (got {self.min_bits} and {self.spread_bits})"
            )

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
            if layer.weight.size > MAX_MATRIX_ENTRIES:
                raise PlanError(f"layer {index}: {layer.weight.shape} is too large a matrix")
            if layer.inputs != inputs:
                raise PlanError(f"layer {index} takes {layer.inputs} inputs but gets {inputs}")
            if not (np.all(np.isfinite(layer.weight)) and np.all(np.isfinite(layer.bias))):
                raise PlanError(f"layer {index} has NaN or infinite weights")
            inputs = layer.outputs
            if index < len(self.activations):
                inputs = self._check_activation(index, self.activations[index], inputs)
        if self.client_activation not in CLIENT_ACTIVATIONS:
            raise PlanError(f"unknown client activation {self.client_activation!r}")
        if self.input_format.value_bits + self.masks.sigma > 62:
            raise PlanError(
                f"input of {self.input_format.value_bits} bits plus a {self.masks.sigma}-bit mask "
                "does not fit int64; declare fewer input bits"
            )

    @staticmethod
    def _check_activation(index: int, activation: Activation, inputs: int) -> int:
        try:
            activation.stage.check()
        except PPInferError as error:
            raise PlanError(f"activation {index}: {error}") from error
        windows = activation.windows
        if windows is not None and (
            windows.ndim != 2
            or windows.shape[0] == 0
            or int(windows.min()) < 0
            or int(windows.max()) >= inputs
        ):
            raise PlanError(f"activation {index}: windows must index its {inputs} inputs")
        return activation.outputs(inputs)

    @property
    def outputs(self) -> int:
        return self.dense[-1].outputs


def _functions_json(functions: tuple[Function, ...]) -> list[dict[str, Any]]:
    return [{"name": f.name, "parameters": list(f.parameters)} for f in functions]


def _functions(items: list[dict[str, Any]]) -> tuple[Function, ...]:
    return tuple(Function(str(f["name"]), tuple(float(p) for p in f["parameters"])) for f in items)


def _put_matrix(arrays: dict[str, npt.NDArray[Any]], prefix: str, weight: npt.NDArray[Any]) -> str:
    """Store ``weight`` dense, or as coordinates when at most a third of it is non-zero."""
    rows, cols = np.nonzero(weight)
    if rows.size * 3 > weight.size:
        arrays[f"{prefix}.weight"] = weight.astype(np.float64)
        return "dense"
    arrays[f"{prefix}.rows"] = rows.astype(np.int64)
    arrays[f"{prefix}.cols"] = cols.astype(np.int64)
    arrays[f"{prefix}.values"] = weight[rows, cols].astype(np.float64)
    return "coordinates"


def _get_matrix(
    arrays: dict[str, npt.NDArray[Any]], prefix: str, storage: str, shape: list[int]
) -> npt.NDArray[np.float64]:
    if storage == "dense":
        return np.asarray(arrays[f"{prefix}.weight"], dtype=np.float64)
    if storage != "coordinates" or len(shape) != 2 or shape[0] * shape[1] > MAX_MATRIX_ENTRIES:
        raise PlanError(f"{prefix}: bad matrix storage {storage!r} of shape {shape}")
    weight = np.zeros(shape, dtype=np.float64)
    weight[arrays[f"{prefix}.rows"], arrays[f"{prefix}.cols"]] = arrays[f"{prefix}.values"]
    return weight


def save_plan(plan: Plan, path: Path, overwrite: bool = True) -> None:
    """Write ``plan`` as a versioned ``.ppi`` archive (over an existing file only with
    ``overwrite``)."""
    if not overwrite and path.exists():
        raise PlanError(f"{path} exists; move it away, or overwrite it (ppinfer compile --force)")
    arrays: dict[str, npt.NDArray[Any]] = {}
    dense_meta = []
    for index, layer in enumerate(plan.dense):
        storage = _put_matrix(arrays, f"dense{index}", layer.weight)
        arrays[f"dense{index}.bias"] = layer.bias.astype(np.float64)
        dense_meta.append(
            {
                "weight_frac_bits": layer.weight_frac_bits,
                "label": layer.label,
                "output_shape": list(layer.output_shape),
                "storage": storage,
                "shape": list(layer.weight.shape),
            }
        )
    activation_meta = []
    for index, activation in enumerate(plan.activations):
        if activation.windows is not None:
            arrays[f"activation{index}.windows"] = activation.windows.astype(np.int64)
        activation_meta.append(
            {
                "functions": _functions_json(activation.functions),
                "after": _functions_json(activation.after),
                "pooled": activation.windows is not None,
                "out_frac_bits": activation.out_frac_bits,
                "label": activation.label,
                "output_shape": list(activation.output_shape),
            }
        )
    meta: dict[str, Any] = {
        "format": PLAN_FORMAT,
        "version": PLAN_VERSION,
        "name": plan.name,
        "input_shape": list(plan.input_shape),
        "input_frac_bits": plan.input_format.frac_bits,
        "input_value_bits": plan.input_format.value_bits,
        "dense": dense_meta,
        "activations": activation_meta,
        "client_activation": plan.client_activation,
        "masks": {
            "sigma": plan.masks.sigma,
            "min_bits": plan.masks.min_bits,
            "spread_bits": plan.masks.spread_bits,
            "answer_sigma": plan.masks.answer_sigma,
        },
    }
    arrays["plan.json"] = np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8)
    with path.open("wb") as handle:
        np.savez_compressed(handle, **arrays)  # type: ignore[arg-type]  # numpy stubs confuse ** with allow_pickle


def load_plan(path: Path) -> Plan:
    """Read and validate a ``.ppi`` plan; never unpickles."""
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        raise PlanError(f"cannot read plan {path}: {error}") from error
    if not isinstance(loaded, np.lib.npyio.NpzFile):  # one array (.npy), not a plan archive
        raise PlanError(
            f"{path} is a single numpy array, not a plan: compile the model first "
            "(ppinfer compile MODEL -o PLAN.ppi)"
        )
    try:
        with loaded as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:  # an object array: a pickle
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
            Dense(
                _get_matrix(arrays, f"dense{i}", str(d["storage"]), [int(v) for v in d["shape"]]),
                np.asarray(arrays[f"dense{i}.bias"], dtype=np.float64),
                int(d["weight_frac_bits"]),
                str(d["label"]),
                tuple(int(v) for v in d["output_shape"]),
            )
            for i, d in enumerate(meta["dense"])
        )
        activations = tuple(
            Activation(
                _functions(a["functions"]),
                int(a["out_frac_bits"]),
                np.asarray(arrays[f"activation{i}.windows"], dtype=np.int64)
                if a["pooled"]
                else None,
                _functions(a["after"]),
                str(a["label"]),
                tuple(int(v) for v in a["output_shape"]),
            )
            for i, a in enumerate(meta["activations"])
        )
        return Plan(
            name=str(meta["name"]),
            input_shape=tuple(int(d) for d in meta["input_shape"]),
            input_format=FixedPoint(int(meta["input_frac_bits"]), int(meta["input_value_bits"])),
            dense=dense,
            activations=activations,
            client_activation=str(meta["client_activation"]),
            masks=MaskSettings(**{k: int(v) for k, v in meta["masks"].items()}),
        )
    except PlanError:
        raise
    except (KeyError, TypeError, ValueError, IndexError, UnicodeDecodeError) as error:
        raise PlanError(f"{path} is a damaged plan: {error!r}") from error
