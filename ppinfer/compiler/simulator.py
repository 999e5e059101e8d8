"""The protocol's arithmetic in the clear: what A and B compute, without encryption.

Used by the compiler to measure agreement with the float model, and by tests as the
oracle the encrypted run must match. Masks are drawn exactly as A draws them, so the
rounding is the same as in a real run (permutations do not change values and are left out).
"""

from __future__ import annotations

import operator

import numpy as np
import numpy.typing as npt

from ppinfer.compiler.activations import evaluate_stage
from ppinfer.compiler.bounds import PlanNumerics, analyze
from ppinfer.compiler.plan import Plan
from ppinfer.encoding.masks import mask_multipliers, multiplier_noise
from ppinfer.encoding.numerics import fold_weights, quantize_exact

__all__ = ["simulate", "simulate_batch"]


def simulate(
    plan: Plan, x: npt.ArrayLike, numerics: PlanNumerics | None = None
) -> npt.NDArray[np.float64]:
    """The logits one private inference returns for input ``x`` (before the client activation)."""
    numerics = numerics or analyze(plan)
    values = [int(v) for v in plan.input_format.encode(np.asarray(x)).ravel()]
    divisors: list[int] | None = None
    for index, layer in enumerate(plan.dense):
        info = numerics.layers[index]
        folded = fold_weights(layer.weight, layer.weight_frac_bits, info.fold_bits, divisors)
        weights = folded.full
        bias = quantize_exact(layer.bias, info.out_scale)
        z = _affine(weights, values, bias)
        if index == len(plan.dense) - 1:
            return np.array([float(v) / 2.0**info.out_scale for v in z])
        activation = plan.activations[index]
        windows = activation.window_rows(len(z)).tolist()
        power = activation.power
        scales = [1] * sum(len(window) for window in windows)
        noise = [0] * len(scales)
        divisors = None
        if power is not None:
            multipliers = mask_multipliers(
                len(windows), plan.masks.min_bits, plan.masks.spread_bits
            )
            divisors = [d**power for d in multipliers]
            scales = [d for d, window in zip(multipliers, windows, strict=True) for _ in window]
            noise = multiplier_noise(scales)
        sent = [z[i] for window in windows for i in window]
        masked = [d * v + e for d, v, e in zip(scales, sent, noise, strict=True)]
        values = evaluate_stage(activation.stage, masked, info.out_scale, activation.out_frac_bits)
    raise AssertionError("unreachable: a plan ends with a Dense layer")


def _affine(weights: npt.NDArray[np.int64], values: list[int], bias: list[int]) -> list[int]:
    """W x + b in exact integers, visiting the non-zero weights only (convolutions are sparse)."""
    z = []
    for row, b in zip(weights, bias, strict=True):
        (columns,) = np.nonzero(row)
        z.append(sum(map(operator.mul, row[columns].tolist(), [values[c] for c in columns])) + b)
    return z


def simulate_batch(plan: Plan, inputs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """:func:`simulate` over the first axis of ``inputs``."""
    numerics = analyze(plan)
    return np.stack([simulate(plan, x, numerics) for x in np.asarray(inputs)])
