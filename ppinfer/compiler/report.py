"""The per-layer table ``ppinfer compile`` prints."""

from __future__ import annotations

import math

import numpy as np

from ppinfer.compiler.lower import CompileReport

__all__ = ["format_report", "round_trips"]


def round_trips(report: CompileReport) -> int:
    """A↔B round trips per inference: the input mask, one per activation, and the seal."""
    return len(report.plan.activations) + 2


def _shape(shape: tuple[int, ...]) -> str:
    return "x".join(str(d) for d in shape)


def format_report(report: CompileReport, key_bits: int = 2048) -> str:
    program = report.program
    plan, numerics, layouts = program.plan, program.numerics, program.layouts(key_bits)
    rows = [
        "| # | layer | output shape | weight bits | weights ≠ 0 | B evaluates | frac bits "
        "| bits to B | masks | ciphertexts to B | rounds |",
        "|---|---|---|---:|---:|---|---:|---:|---|---:|---:|",
    ]
    inputs = math.prod(plan.input_shape)
    for index, lowered in enumerate(program.layers):
        layer, info = lowered.dense, lowered.numerics
        # The homomorphic side multiplies by these; the fold scales the inputs instead.
        weights = lowered.plain_weights.small
        weight_bits = int(np.max(np.abs(weights), initial=0)).bit_length() + 1
        rows.append(
            f"| {2 * index} | {layer.label or 'dense'} | "
            f"{_shape(layer.output_shape or (layer.outputs,))} | {weight_bits} | "
            f"{int(np.count_nonzero(weights))} | | | | | | |"
        )
        inputs = layer.outputs
        if info.masked_bits is None:
            layout = layouts.seal
            rows.append(
                f"| {2 * index + 1} | (seal for the client: {numerics.sealed_modulus_bits}-bit "
                f"values at 2^-{numerics.sealed_scale}) | {layer.outputs} | | | | "
                f"{info.out_scale} | {numerics.sealed_value_bits} | P1 + P2 | "
                f"{math.ceil(layer.outputs / layout.slots)} | 1 |"
            )
            break
        stage = program.stages[index]
        activation, sent, layout = stage.activation, stage.sent, layouts.stages[index]
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
    choice = report.weight_bits_choice
    lines.append(
        f"weight bits: {report.weight_bits}" if choice == "given" else f"weight bits: {choice}"
    )
    if report.agreement is not None:
        lines.append(
            f"agreement with the float model on {report.samples} calibration inputs: "
            f"{report.agreement:.2%} (max logit error {report.max_logit_error:.2e})"
        )
    return "\n".join(lines)
