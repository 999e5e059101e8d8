"""A plan lowered once to the integers every consumer computes with.

:class:`Program` is built from a :class:`~ppinfer.compiler.plan.Plan` once: its proven
bounds (:func:`~ppinfer.compiler.bounds.analyze`), every layer's quantized bias and
integer weights, every stage's windows and fixed-point frame. Model server A's evaluator,
the plaintext simulator, the compile report and the benchmarks read it; none of them
analyzes, quantizes or folds on its own. The per-inference randomness that divides the
next layer's weights (the multiplicative masks d) is the protocol's and reaches
:meth:`LoweredLayer.weights` as ``divisors``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt

from ppinfer.compiler.activations import StageCall
from ppinfer.compiler.bounds import LayerNumerics, PlanNumerics, analyze
from ppinfer.compiler.plan import Activation, Dense, Plan
from ppinfer.encoding.numerics import FoldedWeights, exact_matvec, fold_weights, quantize_exact
from ppinfer.encoding.packing import SlotLayout

__all__ = ["KeyLayouts", "LoweredLayer", "LoweredStage", "Program"]


@dataclass(frozen=True)
class LoweredLayer:
    """One Dense layer as integers: z = E·v + b at 2^out_scale."""

    dense: Dense
    numerics: LayerNumerics
    bias: tuple[int, ...]
    plain_weights: FoldedWeights  # no masks to undo: the weights of the first layer

    def weights(self, divisors: Sequence[int] | None) -> FoldedWeights:
        """The integer weights that undo the previous stage's d^p (``divisors``, one per
        input; None: nothing to undo)."""
        if divisors is None and self.numerics.fold_bits == 0:
            return self.plain_weights
        return fold_weights(
            self.dense.weight, self.dense.weight_frac_bits, self.numerics.fold_bits, divisors
        )

    def affine(self, weights: npt.NDArray[np.int64], values: Sequence[int]) -> list[int]:
        """E·v + b in exact integers (``weights``: :attr:`FoldedWeights.full`)."""
        products = exact_matvec(weights, values)
        return [a + b for a, b in zip(products, self.bias, strict=True)]


@dataclass(frozen=True)
class LoweredStage:
    """One activation stage: the windows of z it sends to B and its fixed-point frame."""

    activation: Activation
    numerics: LayerNumerics  # of the layer whose z it takes
    windows: tuple[tuple[int, ...], ...]

    @property
    def sent(self) -> int:
        """Values sent to B: windows x group."""
        return sum(len(window) for window in self.windows)

    def call(self, layout: SlotLayout) -> StageCall:
        return StageCall(
            self.activation.stage,
            layout,
            self.sent,
            self.numerics.out_scale,
            self.activation.out_frac_bits,
        )


@dataclass(frozen=True)
class KeyLayouts:
    """How values are packed under one key size: each stage's input, the sealed output,
    and the client-aided output."""

    stages: tuple[SlotLayout, ...]
    seal: SlotLayout
    output: SlotLayout
    #: B's shares of each stage's input, then of the output (two-server mode, offline)
    shares: tuple[SlotLayout, ...] = ()


class Program:
    """``plan`` lowered: build it once and share it."""

    def __init__(self, plan: Plan) -> None:
        self.plan = plan
        self.numerics: PlanNumerics = analyze(plan)
        self.layers = tuple(
            LoweredLayer(
                layer,
                info,
                tuple(quantize_exact(layer.bias, info.out_scale)),
                fold_weights(layer.weight, layer.weight_frac_bits, 0, None),
            )
            for layer, info in zip(plan.dense, self.numerics.layers, strict=True)
        )
        self.stages = tuple(
            LoweredStage(
                activation,
                info,
                tuple(tuple(row) for row in activation.window_rows(layer.outputs).tolist()),
            )
            for activation, layer, info in zip(
                plan.activations, plan.dense, self.numerics.layers, strict=False
            )
        )
        #: Bits of the client's input mask r: the input's own plus the statistical margin.
        self.mask_bits = plan.input_format.value_bits + plan.masks.sigma
        self.share_bits = tuple(self._share_bits(index) for index in range(len(self.layers)))
        self._layouts: dict[int, KeyLayouts] = {}

    def _share_bits(self, index: int) -> int:
        """|s| < 2^bits for B's share s = d·(-E m) + rho of layer ``index``'s mask part:
        m below 2^(mask bits) (the client's r, or the previous stage's answer mask t),
        E's rows at most the plain weights' absolute row sum times the largest fold
        factor 2^fold_bits, d below 2^max_bits where the stage has multipliers, and rho
        ``answer_sigma`` bits wider than all that (A's mask: B knows m)."""
        masks = self.plan.masks
        layer = self.layers[index]
        if index == 0:
            m_bits = self.mask_bits
        else:
            m_bits = cast(int, self.numerics.layers[index - 1].answer_bits) + masks.answer_sigma
        rows = np.abs(layer.plain_weights.small).sum(axis=1, dtype=np.float64)
        l1_bits = int(rows.max(initial=1.0)).bit_length() + 1
        stage = self.stages[index] if index < len(self.stages) else None
        d_bits = masks.max_bits if stage is not None and stage.activation.power is not None else 0
        return m_bits + l1_bits + layer.numerics.fold_bits + d_bits + masks.answer_sigma + 1

    @property
    def name(self) -> str:
        return self.plan.name

    @property
    def inputs(self) -> int:
        return int(np.prod(self.plan.input_shape))

    def layouts(self, key_bits: int) -> KeyLayouts:
        """The slot layouts under a ``key_bits`` key (A's key, or the client's own)."""
        if key_bits not in self._layouts:
            self._layouts[key_bits] = KeyLayouts(
                tuple(
                    SlotLayout.for_key(cast(int, stage.numerics.masked_bits), key_bits)
                    for stage in self.stages
                ),
                SlotLayout.for_key(self.numerics.sealed_value_bits, key_bits),
                SlotLayout.for_key(self.numerics.layers[-1].z_bits, key_bits),
                tuple(SlotLayout.for_key(bits, key_bits) for bits in self.share_bits),
            )
        return self._layouts[key_bits]
