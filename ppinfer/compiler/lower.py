"""Steps to a plan: fuse, read matrices and windows off the model, choose precisions.

Consecutive affine steps fuse into one matrix, read off the composed float64 operation
by probing it with the basis vectors (so convolutions with any stride, padding, dilation
and groups, average pooling and batch normalization need no formulas of their own), and
checked on random inputs. Consecutive non-linear steps fuse into one round trip to B;
max-pooling windows are read off the pooling the same way. A second pooling in one run of
non-linear steps, a model that starts or ends with one, gets an identity layer between.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from ppinfer.compiler.activations import Function
from ppinfer.compiler.plan import Activation, Dense, MaskSettings, Plan
from ppinfer.compiler.program import Program
from ppinfer.compiler.simulator import simulate_batch
from ppinfer.compiler.steps import CompileError, Run, Step, check_function
from ppinfer.encoding.fixedpoint import FixedPoint

__all__ = ["CompileReport", "Precision", "lower"]

_PROBE_BATCH = 2048


#: Weight bits without calibration data to pick them by, and the widest a pick tries.
DEFAULT_WEIGHT_BITS = 16
#: The narrowest weight bits a pick tries.
MIN_PICKED_WEIGHT_BITS = 4


@dataclass(frozen=True)
class Precision:
    """Bits of the fixed-point encodings; activations get ``activation_bits`` significant
    bits over the range the calibration data reaches (``activation_frac_bits`` without it).
    ``weight_bits`` None: the compiler picks the narrowest that keeps agreement
    (:func:`ppinfer.compiler.model_compiler.compile_model`)."""

    input_value_bits: int = 20
    weight_bits: int | None = None
    activation_bits: int = 20
    activation_frac_bits: int = 16
    input_range: float | None = None

    def __post_init__(self) -> None:
        for name, low, high in (
            ("input_value_bits", 2, 40),
            ("weight_bits", 2, 24),
            ("activation_bits", 2, 40),
            ("activation_frac_bits", 0, 64),
        ):
            value = getattr(self, name)
            if value is None and name == "weight_bits":
                continue
            if not low <= value <= high:
                raise CompileError(f"{name} must be in [{low}, {high}], not {value}")
        if self.input_range is not None and not self.input_range > 0:
            raise CompileError(f"input_range must be positive, not {self.input_range}")


@dataclass(frozen=True)
class CompileReport:
    program: Program  # the plan, lowered: what A, the simulator and the report read
    agreement: float | None  # share of calibration inputs whose argmax matches the float model
    max_logit_error: float | None
    samples: int
    #: how the weight bits were chosen: "given", or how the narrowest was picked
    weight_bits_choice: str = "given"
    weight_bits: int = DEFAULT_WEIGHT_BITS

    @property
    def plan(self) -> Plan:
        return self.program.plan


@dataclass
class _Affine:
    steps: list[Step]


@dataclass
class _NonLinear:
    before: list[Step]
    pool: Step | None = None
    after: list[Step] | None = None


def _torch() -> Any:
    import torch

    return torch


def _compose(runs: Sequence[Run]) -> Run:
    def run(x: Any) -> Any:
        for step in runs:
            x = step(x)
        return x

    return run


def _output_shape(run: Run, shape: tuple[int, ...], label: str) -> tuple[int, ...]:
    torch = _torch()
    try:
        with torch.no_grad():
            return tuple(run(torch.zeros((1, *shape), dtype=torch.float64)).shape[1:])
    except Exception as error:  # torch raises many kinds for a wrong shape
        raise CompileError(f"{label} cannot take an input of shape {shape}: {error}") from error


def _probe(run: Run, shape: tuple[int, ...]) -> npt.NDArray[np.float64]:
    """run(e_i) for every basis vector e_i, as rows [inputs, outputs]."""
    torch = _torch()
    size = math.prod(shape)
    rows = []
    with torch.no_grad():
        for start in range(0, size, _PROBE_BATCH):
            stop = min(size, start + _PROBE_BATCH)
            basis = torch.zeros((stop - start, size), dtype=torch.float64)
            basis[torch.arange(stop - start), torch.arange(start, stop)] = 1.0
            rows.append(run(basis.reshape(-1, *shape)).reshape(stop - start, -1).numpy())
    return np.concatenate(rows)


def _random_inputs(shape: tuple[int, ...]) -> Any:
    torch = _torch()
    generator = torch.Generator().manual_seed(1)
    return torch.randn((3, *shape), generator=generator, dtype=torch.float64) * 3.0


def _affine_matrix(
    label: str, run: Run, shape: tuple[int, ...]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    torch = _torch()
    with torch.no_grad():
        bias = run(torch.zeros((1, *shape), dtype=torch.float64)).reshape(-1).numpy()
        weight = (_probe(run, shape) - bias[None, :]).T
        x = _random_inputs(shape)
        actual = run(x).reshape(x.shape[0], -1).numpy()
    expected = x.reshape(x.shape[0], -1).numpy() @ weight.T + bias
    scale = 1.0 + float(np.max(np.abs(expected)))
    if not np.allclose(actual, expected, rtol=1e-9, atol=1e-9 * scale):
        raise CompileError(f"{label} is not an affine map of its input (is it in train mode?)")
    weight[np.abs(weight) < 1e-12 * (1.0 + float(np.max(np.abs(weight))))] = 0.0
    return np.ascontiguousarray(weight), bias.copy()


def _pool_windows(label: str, run: Run, shape: tuple[int, ...]) -> npt.NDArray[np.int64]:
    torch = _torch()
    membership = _probe(run, shape) > 0.5  # [inputs, outputs]: e_i reaches output o
    members = [np.flatnonzero(membership[:, o]) for o in range(membership.shape[1])]
    if any(m.size == 0 for m in members):
        raise CompileError(f"{label} has a window with no input (padding only)")
    group = max(m.size for m in members)
    # Short windows (at borders) repeat their own first value: the max is unchanged.
    windows = np.array(
        [np.concatenate([m, np.full(group - m.size, m[0])]) for m in members], dtype=np.int64
    )
    with torch.no_grad():
        x = _random_inputs(shape)
        actual = run(x).reshape(x.shape[0], -1).numpy()
    expected = x.reshape(x.shape[0], -1).numpy()[:, windows].max(axis=2)
    if not np.allclose(actual, expected, rtol=0, atol=1e-12):
        raise CompileError(f"{label} is not a max over fixed windows of its input")
    return windows


def _segments(steps: list[Step]) -> tuple[list[_Affine | _NonLinear], str]:
    """Group the chain: affine runs and non-linear runs, alternating, starting and ending
    affine; and the client's trailing function."""
    client = ""
    if steps and steps[-1].kind == "client":
        client = steps[-1].client
        steps = steps[:-1]
    elif steps and steps[-1].function == Function("sigmoid"):
        client = "sigmoid"  # a last sigmoid needs no round trip: the client runs it
        steps = steps[:-1]
    for step in steps:
        if step.kind == "client":
            raise CompileError(
                f"{step.label} runs at the client, so it must be the model's last layer"
            )
    segments: list[_Affine | _NonLinear] = []
    for step in steps:
        last = segments[-1] if segments else None
        if step.kind == "affine":
            if isinstance(last, _Affine):
                last.steps.append(step)
            else:
                segments.append(_Affine([step]))
            continue
        if not isinstance(last, _NonLinear) or (step.kind == "maxpool" and last.pool is not None):
            if not isinstance(last, _Affine):
                segments.append(_Affine([]))  # identity between two round trips, or first
            last = _NonLinear([])
            segments.append(last)
        if step.kind == "maxpool":
            last.pool, last.after = step, []
        elif last.after is not None:
            last.after.append(step)
        else:
            last.before.append(step)
    if not segments or not isinstance(segments[-1], _Affine):
        segments.append(_Affine([]))
    if not isinstance(segments[0], _Affine):
        segments.insert(0, _Affine([]))
    return segments, client


def _functions(steps: list[Step], shape: tuple[int, ...]) -> tuple[Function, ...]:
    functions = []
    for step in steps:
        assert step.function is not None
        check_function(step.label, step.function, step.run, shape)
        functions.append(step.function)
    return tuple(functions)


def _frac_bits(largest: float, bits: int) -> int:
    top = math.ceil(math.log2(largest)) if largest > 0 else 0
    return bits - 1 - top


def lower(
    steps: list[Step],
    input_shape: tuple[int, ...],
    name: str,
    calibration: npt.NDArray[np.float64] | None,
    precision: Precision,
    masks: MaskSettings,
) -> CompileReport:
    """The plan of a chain of steps, and its agreement with the float model."""
    torch = _torch()
    segments, client = _segments(steps)
    shape = tuple(input_shape)
    dense: list[Dense] = []
    activations: list[Activation] = []
    values = None if calibration is None else torch.as_tensor(calibration, dtype=torch.float64)
    if values is not None and tuple(values.shape[1:]) != shape:
        raise CompileError(
            f"calibration data has shape {tuple(values.shape[1:])} per input, not {shape}"
        )
    for segment in segments:
        if isinstance(segment, _Affine):
            run = _compose([s.run for s in segment.steps])
            label = " + ".join(s.label for s in segment.steps) or "(identity)"
            out_shape = _output_shape(run, shape, label)
            weight, bias = _affine_matrix(label, run, shape)
            dense.append(
                Dense(
                    weight,
                    bias,
                    _frac_bits(
                        float(np.max(np.abs(weight), initial=0.0)),
                        precision.weight_bits or DEFAULT_WEIGHT_BITS,
                    ),
                    label,
                    out_shape,
                )
            )
        else:
            runs = [s.run for s in segment.before]
            before = _functions(segment.before, shape)
            windows = None
            after: tuple[Function, ...] = ()
            if segment.pool is not None:
                pool_in = _output_shape(_compose(runs), shape, segment.pool.label)
                windows = _pool_windows(segment.pool.label, _compose([segment.pool.run]), pool_in)
                pool_out = _output_shape(segment.pool.run, pool_in, segment.pool.label)
                after = _functions(segment.after or [], pool_out)
                runs += [segment.pool.run] + [s.run for s in segment.after or []]
            run = _compose(runs)
            labels = [
                *segment.before,
                *([segment.pool] if segment.pool else []),
                *(segment.after or []),
            ]
            label = " + ".join(s.label for s in labels)
            out_shape = _output_shape(run, shape, label)
            if values is not None:
                with torch.no_grad():
                    reached = float(run(values).abs().max()) if values.numel() else 0.0
                out_frac = _frac_bits(reached, precision.activation_bits)
            else:
                out_frac = precision.activation_frac_bits
            activations.append(
                Activation(before, max(0, out_frac), windows, after, label, out_shape)
            )
        if values is not None:
            with torch.no_grad():
                values = run(values)
        shape = out_shape
    plan = _plan(
        name, tuple(input_shape), calibration, precision, dense, activations, client, masks
    )
    program = Program(plan)
    bits = precision.weight_bits or DEFAULT_WEIGHT_BITS
    if calibration is None or values is None:
        return CompileReport(program, None, None, 0, weight_bits=bits)
    reference = values.reshape(values.shape[0], -1).numpy()
    private = simulate_batch(program, calibration)
    agree = float(np.mean(np.argmax(private, axis=1) == np.argmax(reference, axis=1)))
    return CompileReport(
        program, agree, float(np.max(np.abs(private - reference))), len(calibration),
        weight_bits=bits,
    )  # fmt: skip


def _plan(
    name: str,
    input_shape: tuple[int, ...],
    calibration: npt.NDArray[np.float64] | None,
    precision: Precision,
    dense: list[Dense],
    activations: list[Activation],
    client: str,
    masks: MaskSettings,
) -> Plan:
    input_range = precision.input_range
    if input_range is None:
        if calibration is None:
            raise CompileError("give calibration data or an input range to fix the input scale")
        input_range = float(np.max(np.abs(calibration))) or 1.0
    input_frac = _frac_bits(input_range, precision.input_value_bits)
    if input_frac < 0:
        raise CompileError(
            f"inputs up to {input_range:g} need more than {precision.input_value_bits} bits"
        )
    return Plan(
        name=name,
        input_shape=input_shape,
        input_format=FixedPoint(input_frac, precision.input_value_bits),
        dense=tuple(dense),
        activations=tuple(activations),
        client_activation=client,
        masks=masks,
    )
