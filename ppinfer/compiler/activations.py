"""The exact non-linear functions key server B evaluates, and their bounds.

A stage is what B computes in one round trip: elementwise functions, an optional max
over windows of ``group`` values (max pooling; ``group == 1`` means none), then more
elementwise functions, and a rounding to the output scale. The same code runs at B and in
the simulator, so the simulator predicts B to the last bit.

Piecewise-linear functions (ReLU, LeakyReLU/PReLU, Hardtanh/ReLU6, identity, square and
max) are computed exactly on dyadic rationals: a vector of integers over one power of two.
Transcendental ones (sigmoid, tanh, SiLU, GELU, Softplus) in float64, as the float model
does (in float32); once a stage has gone to float it stays float.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from ppinfer.encoding.numerics import rescale
from ppinfer.encoding.packing import SlotLayout
from ppinfer.errors import PPInferError

__all__ = [
    "FUNCTIONS",
    "Function",
    "FunctionSpec",
    "MaskSpec",
    "StageCall",
    "StageSpec",
    "evaluate_stage",
    "output_bound",
    "stage_power",
]

Floats = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Function:
    """One elementwise function and its parameters (for example LeakyReLU's slope)."""

    name: str
    parameters: tuple[float, ...] = ()

    def check(self) -> None:
        spec = FUNCTIONS.get(self.name)
        if spec is None:
            raise PPInferError(f"unknown function {self.name!r}; known: {', '.join(FUNCTIONS)}")
        if len(self.parameters) != len(spec.parameter_names):
            raise PPInferError(
                f"{self.name} takes {len(spec.parameter_names)} parameters "
                f"({', '.join(spec.parameter_names) or 'none'}), got {len(self.parameters)}"
            )
        if not all(math.isfinite(p) for p in self.parameters):
            raise PPInferError(f"{self.name} parameters must be finite")
        if spec.check is not None:
            spec.check(self.parameters)


@dataclass(frozen=True)
class FunctionSpec:
    """power p with f(d t) = d^p f(t) for every d > 0, or None (only a permutation hides t)."""

    power: int | None
    parameter_names: tuple[str, ...]
    bound: Callable[[tuple[float, ...], float], float]  # |f(t)| for |t| <= b
    exact: Callable[[tuple[float, ...], list[int], int], tuple[list[int], int]] | None
    real: Callable[[tuple[float, ...], Floats], Floats]
    check: Callable[[tuple[float, ...]], None] | None = None


def _dyadic(value: float) -> tuple[int, int]:
    """value = numerator / 2^exponent exactly (every float is dyadic)."""
    numerator, denominator = value.as_integer_ratio()
    return numerator, denominator.bit_length() - 1


def _align(values: list[int], exponent: int, target: int) -> list[int]:
    return [v << (target - exponent) for v in values]


def _exact_leaky(params: tuple[float, ...], values: list[int], e: int) -> tuple[list[int], int]:
    slope, k = _dyadic(params[0])
    return [v << k if v >= 0 else v * slope for v in values], e + k


def _exact_clip(params: tuple[float, ...], values: list[int], e: int) -> tuple[list[int], int]:
    (low, kl), (high, kh) = _dyadic(params[0]), _dyadic(params[1])
    target = max(e, kl, kh)
    low, high = low << (target - kl), high << (target - kh)
    return [min(max(v, low), high) for v in _align(values, e, target)], target


def _check_clip(params: tuple[float, ...]) -> None:
    if params[0] > params[1]:
        raise PPInferError(f"hardtanh needs min <= max, got {params[0]} > {params[1]}")


def _check_softplus(params: tuple[float, ...]) -> None:
    if params[0] <= 0:
        raise PPInferError(f"softplus needs beta > 0, got {params[0]}")


def _sigmoid(t: Floats) -> Floats:
    with np.errstate(over="ignore"):
        return np.asarray(1.0 / (1.0 + np.exp(-t)), dtype=np.float64)


def _softplus(params: tuple[float, ...], t: Floats) -> Floats:
    beta, threshold = params
    with np.errstate(over="ignore"):
        soft = np.log1p(np.exp(beta * t)) / beta
    return np.where(beta * t > threshold, t, soft)


def _gelu(t: Floats) -> Floats:
    erf = np.array([math.erf(v / math.sqrt(2.0)) for v in t.tolist()], dtype=np.float64)
    return np.asarray(0.5 * t * (1.0 + erf), dtype=np.float64)


def _gelu_tanh(t: Floats) -> Floats:
    inner = math.sqrt(2.0 / math.pi) * (t + 0.044715 * t**3)
    return np.asarray(0.5 * t * (1.0 + np.tanh(inner)), dtype=np.float64)


def _linear_bound(params: tuple[float, ...], b: float) -> float:
    return b


FUNCTIONS: dict[str, FunctionSpec] = {
    "identity": FunctionSpec(1, (), _linear_bound, lambda p, v, e: (v, e), lambda p, t: t),
    "relu": FunctionSpec(
        1,
        (),
        _linear_bound,
        lambda p, v, e: ([x if x > 0 else 0 for x in v], e),
        lambda p, t: np.maximum(t, 0.0),
    ),
    "leaky_relu": FunctionSpec(
        1,
        ("negative_slope",),
        lambda p, b: max(1.0, abs(p[0])) * b,
        _exact_leaky,
        lambda p, t: np.where(t >= 0, t, p[0] * t),
    ),
    "square": FunctionSpec(
        2, (), lambda p, b: b * b, lambda p, v, e: ([x * x for x in v], 2 * e), lambda p, t: t * t
    ),
    "hardtanh": FunctionSpec(
        None,
        ("min_val", "max_val"),
        lambda p, b: max(abs(min(max(-b, p[0]), p[1])), abs(min(max(b, p[0]), p[1]))),
        _exact_clip,
        lambda p, t: np.clip(t, p[0], p[1]),
        _check_clip,
    ),
    "sigmoid": FunctionSpec(None, (), lambda p, b: 1.0, None, lambda p, t: _sigmoid(t)),
    "tanh": FunctionSpec(None, (), lambda p, b: 1.0, None, lambda p, t: np.tanh(t)),
    "silu": FunctionSpec(None, (), _linear_bound, None, lambda p, t: t * _sigmoid(t)),
    "gelu": FunctionSpec(None, (), _linear_bound, None, lambda p, t: _gelu(t)),
    "gelu_tanh": FunctionSpec(None, (), _linear_bound, None, lambda p, t: _gelu_tanh(t)),
    "softplus": FunctionSpec(
        None,
        ("beta", "threshold"),
        lambda p, b: b + math.log(2.0) / p[0],
        None,
        _softplus,
        _check_softplus,
    ),
}


@dataclass(frozen=True)
class StageSpec:
    """One B round trip: ``before`` elementwise, max over groups of ``group``, ``after``."""

    before: tuple[Function, ...]
    group: int = 1
    after: tuple[Function, ...] = ()

    def check(self) -> None:
        if not 1 <= self.group <= 4096:
            raise PPInferError(f"a pooling window holds 1 to 4096 values, got {self.group}")
        if len(self.before) + len(self.after) > 16:
            raise PPInferError("a stage chains at most 16 functions")
        for function in (*self.before, *self.after):
            function.check()

    def describe(self) -> str:
        parts = [f.name for f in self.before]
        if self.group > 1:
            parts.append(f"max/{self.group}")
        return " → ".join([*parts, *(f.name for f in self.after)]) or "identity"


@dataclass(frozen=True)
class StageCall:
    """One activation request from A to B: the stage, how its values are packed, and the
    fixed-point frame (B reads v as v / 2^in_frac and returns results at 2^out_frac)."""

    stage: StageSpec
    layout: SlotLayout
    count: int  # values sent (windows x group); B returns count / group results
    in_frac: int
    out_frac: int

    @property
    def results(self) -> int:
        """How many values the stage answers: one per window."""
        return self.count // self.stage.group


@dataclass(frozen=True)
class MaskSpec:
    """One stage's answer mask, as A asks B for it: ``count`` values uniform in
    [0, 2^bits) (the bound of the stage's results plus sigma)."""

    count: int
    bits: int


def stage_power(stage: StageSpec) -> int | None:
    """p with stage(d t) = d^p stage(t) for d > 0, or None."""
    power = 1
    for function in (*stage.before, *stage.after):
        p = FUNCTIONS[function.name].power
        if p is None:
            return None
        power *= p
    return power


def output_bound(stage: StageSpec, bound: float) -> float:
    """A bound on |stage(t)| for inputs |t| <= bound (max pooling does not widen it)."""
    for function in (*stage.before, *stage.after):
        bound = FUNCTIONS[function.name].bound(function.parameters, bound)
    return bound


def _apply(
    functions: Sequence[Function], exact: tuple[list[int], int] | None, real: Floats | None
) -> tuple[tuple[list[int], int] | None, Floats | None]:
    for function in functions:
        spec = FUNCTIONS[function.name]
        if exact is not None and spec.exact is not None:
            exact = spec.exact(function.parameters, *exact)
            continue
        if exact is not None:
            values, e = exact
            real = np.array([math.ldexp(v, -e) for v in values], dtype=np.float64)
            exact = None
        assert real is not None
        real = spec.real(function.parameters, real)
    return exact, real


def evaluate_stage(
    stage: StageSpec, values: Sequence[int], in_frac: int, out_frac: int
) -> list[int]:
    """round(stage(v / 2^in_frac) * 2^out_frac), halves up, for each window of ``values``."""
    if len(values) % stage.group:
        raise PPInferError(f"{len(values)} values do not split into windows of {stage.group}")
    try:
        return _evaluate(stage, values, in_frac, out_frac)
    except (OverflowError, ValueError) as error:  # a value far beyond float range
        raise PPInferError(f"{stage.describe()}: value out of range ({error})") from error


def _evaluate(stage: StageSpec, values: Sequence[int], in_frac: int, out_frac: int) -> list[int]:
    exact, real = _apply(stage.before, ([int(v) for v in values], in_frac), None)
    if stage.group > 1:
        if exact is not None:
            numbers, e = exact
            exact = (
                [max(numbers[i : i + stage.group]) for i in range(0, len(numbers), stage.group)],
                e,
            )
        else:
            assert real is not None
            real = real.reshape(-1, stage.group).max(axis=1)
    exact, real = _apply(stage.after, exact, real)
    if exact is not None:
        numbers, e = exact
        return [rescale(v, out_frac - e) for v in numbers]
    assert real is not None
    return [math.floor(v) for v in (real * 2.0**out_frac + 0.5).tolist()]
