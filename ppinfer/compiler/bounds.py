"""Scales and proven bit bounds of every value a plan makes A, B and the client handle.

Bounds are worst cases over the declared input range (l1 norms of weight rows, plus
every rounding), so no plaintext of an admissible input can exceed them: A checks them
against the key size when it loads a plan, and the slot layouts B unpacks with are built
from them. They are looser than what real data reaches, never tighter.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ppinfer.compiler.activations import output_bound
from ppinfer.compiler.plan import Plan, PlanError
from ppinfer.encoding.numerics import FOLD_PRECISION_BITS, SEALED_FRAC_BITS, bits_for

__all__ = ["LayerNumerics", "PlanNumerics", "analyze", "check_key_fits"]

#: Relative slack on float bound arithmetic, far above float64 rounding.
_SLACK = 1.0 + 2.0**-30


@dataclass(frozen=True)
class LayerNumerics:
    """One Dense layer and, for hidden layers, the activation after it."""

    in_scale: int  # fractional bits of the layer's input values (masks aside)
    fold_bits: int  # extra weight bits that absorb the inverse masks d^-p of the input
    out_scale: int  # fractional bits of z = W x + b
    z_bits: int  # |z| < 2^z_bits
    masked_bits: int | None  # |d z| < 2^masked_bits: what B unpacks (hidden layers)
    answer_bits: int | None = None  # |y| < 2^answer_bits: B's results, before its mask t


@dataclass(frozen=True)
class PlanNumerics:
    layers: tuple[LayerNumerics, ...]
    output_scale: int  # fractional bits of the last layer's z (the client-aided output)
    sealed_value_bits: int  # |o + s| < 2^sealed_value_bits: what B decrypts
    sealed_shift: int  # B seals floor((o + s) / 2^shift) ...
    sealed_modulus_bits: int  # ... mod 2^sealed_modulus_bits (numerics.reduce_sealed)
    sealed_value_bytes: int  # width of each sealed value and of A's reduced mask
    max_plaintext_bits: int

    @property
    def sealed_scale(self) -> int:
        """Fractional bits of the logits the two-server client recovers."""
        return self.output_scale - self.sealed_shift


def analyze(plan: Plan) -> PlanNumerics:
    """Scales and worst-case bounds of every layer of ``plan``."""
    masks = plan.masks
    fmt = plan.input_format
    real_in = (2**fmt.value_bits - 1) / 2**fmt.frac_bits  # |x| bound
    in_scale, fold_bits = fmt.frac_bits, 0
    divisor_min = divisor_max = 1.0  # range of d^p on this layer's inputs
    input_rounding = 0.0  # |y - d^p a 2^in_scale| (the input itself is exact)
    layers = []
    largest = fmt.value_bits + masks.sigma + 1
    for index, layer in enumerate(plan.dense):
        weight_scale = layer.weight_frac_bits + fold_bits
        out_scale = in_scale + weight_scale
        row_l1 = np.sum(np.abs(layer.weight), axis=1)
        row_terms = np.count_nonzero(layer.weight, axis=1)  # a zero weight stays exactly zero
        # E = W_q c with W_q = round(W 2^wf), c = round(2^fold / d^p) (numerics.fold_weights):
        # |E - W 2^weight_scale / d^p| <= c / 2 + |W| 2^wf / 2 (the second only with masks),
        # c <= 2^fold / divisor_min + 1/2, and |y| <= d^p a 2^in_scale + rounding:
        folded = divisor_max > 1.0
        wf = layer.weight_frac_bits
        c_max = 2.0**fold_bits / divisor_min + (0.5 if folded else 0.0)
        c_times_d = 2.0**fold_bits + (0.5 * divisor_max if folded else 0.0)
        per_row = (
            row_l1 * real_in * 2.0**out_scale
            + 0.5 * row_l1 * 2.0**weight_scale / divisor_min
            + 0.5 * row_terms * (c_times_d * real_in * 2.0**in_scale + c_max * input_rounding)
            + (
                0.5 * row_l1 * 2.0**wf * (divisor_max * real_in * 2.0**in_scale + input_rounding)
                if folded
                else 0.0
            )
            + row_l1 * input_rounding * 2.0**weight_scale / divisor_min
            + np.abs(layer.bias) * 2.0**out_scale
            + 0.5
        )
        z_bound = float(np.max(per_row)) * _SLACK + 1
        z_bits = bits_for(z_bound)
        largest = max(largest, z_bits)
        if index == len(plan.dense) - 1:
            layers.append(LayerNumerics(in_scale, fold_bits, out_scale, z_bits, None))
            break
        activation = plan.activations[index]
        power = activation.power
        d_max_bits = masks.max_bits if power is not None else 0
        # B gets d·z + e with 0 <= e < d (ppinfer.encoding.masks.multiplier_noise):
        # |d·z + e| < d·(|z| + 1) <= 2^(z_bits + d_max_bits) as before, and the stage
        # computes exactly d^p·stage(z + e/d): its input is off by less than one unit of z's scale.
        masked_bits = z_bits + d_max_bits
        real_z = (z_bound + (1.0 if power is not None else 0.0)) / 2.0**out_scale
        real_in = output_bound(activation.stage, real_z)
        next_scale = activation.out_frac_bits
        if power is None:
            next_fold, divisor_min, divisor_max = 0, 1.0, 1.0
        else:
            next_fold = power * masks.max_bits + FOLD_PRECISION_BITS
            divisor_min = 2.0 ** (power * masks.min_bits)
            divisor_max = 2.0 ** (power * masks.max_bits)
        answer_bits = bits_for(divisor_max * real_in * 2.0**next_scale) + 1
        layers.append(
            LayerNumerics(in_scale, fold_bits, out_scale, z_bits, masked_bits, answer_bits)
        )
        in_scale, fold_bits, input_rounding = next_scale, next_fold, 0.5
        # B answers y + t with t below 2^(answer_bits + answer_sigma): A's plaintexts reach that
        largest = max(largest, masked_bits, answer_bits + masks.answer_sigma + 1)
    output_bits, output_scale = layers[-1].z_bits, layers[-1].out_scale
    sealed_bits = output_bits + masks.answer_sigma + 1
    largest = max(largest, sealed_bits)
    # The client needs neither the mask's sigma bits nor scale bits past SEALED_FRAC_BITS:
    # the difference of the two reduced values is floor(o / 2^shift) or one more.
    shift = max(0, output_scale - SEALED_FRAC_BITS)
    modulus_bits = max(2, output_bits - shift + 2)
    return PlanNumerics(
        layers=tuple(layers),
        output_scale=output_scale,
        sealed_value_bits=sealed_bits,
        sealed_shift=shift,
        sealed_modulus_bits=modulus_bits,
        sealed_value_bytes=(modulus_bits + 1 + 7) // 8,  # non-negative, as a signed integer
        max_plaintext_bits=largest,
    )


def check_key_fits(numerics: PlanNumerics, key_bits: int, plan_name: str) -> None:
    """Refuse a plan whose largest plaintext could reach n/2 under a ``key_bits`` key."""
    if numerics.max_plaintext_bits > key_bits - 2:
        raise PlanError(
            f"plan {plan_name!r} needs plaintexts of {numerics.max_plaintext_bits} bits, but a "
            f"{key_bits}-bit key holds {key_bits - 2}; use fewer weight or activation bits"
        )
