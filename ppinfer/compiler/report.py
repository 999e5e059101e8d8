"""The per-layer table ``ppinfer compile`` prints."""

from __future__ import annotations

import math

import numpy as np

from ppinfer.compiler.bounds import analyze
from ppinfer.compiler.lower import CompileReport
from ppinfer.encoding.numerics import fold_weights
from ppinfer.encoding.packing import SlotLayout

__all__ = ["format_report", "round_trips"]


def round_trips(report: CompileReport) -> int:
    """A↔B round trips per inference: the input mask, one per activation, and the seal."""
    return len(report.plan.activations) + 2


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def format_report(report: CompileReport, key_bits: int = 2048) -> str:
    plan, numerics = report.plan, analyze(report.plan)
    rows = [
        "| # | layer | output shape | weight bits | weights ≠ 0 | B evaluates | frac bits "
        "| bits to B | masks | ciphertexts to B | rounds |",
        "|---|---|---|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    inputs = math.prod(plan.input_shape)
    for index, (layer, info) in enumerate(zip(plan.dense, numerics.layers, strict=True)):
        # The homomorphic side multiplies by these; the fold scales the inputs instead.
        weights = fold_weights(layer.weight, layer.weight_frac_bits, 0, None).small
        weight_bits = int(np.max(np.abs(weights), initial=0)).bit_length() + 1
        rows.append(
            f"| {2 * index} | {layer.label or 'dense'} | "
            f"{_shape(layer.output_shape or (layer.outputs,))} | {weight_bits} | "
            f"{int(np.count_nonzero(weights))} | | | | | | |"
        )
        inputs = layer.outputs
        if info.masked_bits is None:
            layout = SlotLayout.for_key(numerics.sealed_value_bits, key_bits)
            rows.append(
                f"| {2 * index + 1} | (seal for the client: {numerics.sealed_modulus_bits}-bit "
                f"values at 2^-{numerics.sealed_scale}) | {layer.outputs} | | | | "
                f"{info.out_scale} | {numerics.sealed_value_bits} | P1 + P2 | "
                f"{math.ceil(layer.outputs / layout.slots)} | 1 |"
            )
            break
        activation = plan.activations[index]
        sent = activation.window_rows(inputs).size
        layout = SlotLayout.for_key(info.masked_bits, key_bits)
        masks = "P2" + (" (windows)" if activation.windows is not None else "")
        if activation.power is not None:
            masks += f" + P3 (d^{activation.power})"
        rows.append(
            f"| {2 * index + 1} | {activation.label} | "
            f"{_shape(activation.output_shape or (activation.outputs(inputs),))} | | | "
            f"{activation.stage.describe()} | {activation.out_frac_bits} | {info.masked_bits} | "
            f"{masks} | {math.ceil(sent / layout.slots)} | 1 |"
        )
        inputs = activation.outputs(inputs)
    lines = [
        f"plan {plan.name!r}: input {_shape(plan.input_shape)}, "
        f"x^ = round(x * 2^{plan.input_format.frac_bits}), "
        f"|x| <= {plan.input_format.max_abs_real:g}; largest plaintext "
        f"{numerics.max_plaintext_bits} bits; {round_trips(report)} round trips to B "
        f"(input mask, {len(plan.activations)} activations, seal)",
        *rows,
    ]
    if report.agreement is not None:
        lines.append(
            f"agreement with the float model on {report.samples} calibration inputs: "
            f"{report.agreement:.2%} (max logit error {report.max_logit_error:.2e})"
        )
    return "\n".join(lines)
