"""The protocol's arithmetic in the clear: what A and B compute, without encryption.

Used by the compiler to measure agreement with the float model, and by tests as the
oracle the encrypted run must match. Masks are drawn exactly as A draws them, so the
rounding is the same as in a real run (permutations do not change values and are left out).
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from ppinfer.compiler.activations import evaluate_stage
from ppinfer.compiler.program import Program
from ppinfer.encoding.masks import mask_multipliers, multiplier_noise

__all__ = ["simulate", "simulate_batch"]


def simulate(program: Program, x: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """The logits one private inference returns for input ``x`` (before the client activation)."""
    plan = program.plan
    values = [int(v) for v in plan.input_format.encode(np.asarray(x)).ravel()]
    divisors: list[int] | None = None
    for index, layer in enumerate(program.layers):
        z = layer.affine(layer.weights(divisors).full, values)
        if index == len(program.stages):
            return np.array([float(v) / 2.0**layer.numerics.out_scale for v in z])
        stage = program.stages[index]
        power = stage.activation.power
        scales = [1] * stage.sent
        noise = [0] * stage.sent
        divisors = None
        if power is not None:
            multipliers = mask_multipliers(
                len(stage.windows), plan.masks.min_bits, plan.masks.spread_bits
            )
            divisors = [d**power for d in multipliers]
            scales = [
                d for d, window in zip(multipliers, stage.windows, strict=True) for _ in window
            ]
            noise = multiplier_noise(scales)
        sent = [z[i] for window in stage.windows for i in window]
        masked = [d * v + e for d, v, e in zip(scales, sent, noise, strict=True)]
        values = evaluate_stage(
            stage.activation.stage,
            masked,
            layer.numerics.out_scale,
            stage.activation.out_frac_bits,
        )
    raise AssertionError("unreachable: a plan ends with a Dense layer")


def simulate_batch(program: Program, inputs: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """:func:`simulate` over the first axis of ``inputs``."""
    return np.stack([simulate(program, x) for x in np.asarray(inputs)])
