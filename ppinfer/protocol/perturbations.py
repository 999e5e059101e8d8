"""A's per-stage perturbations (docs/PROTOCOL.md P2, P3): a permutation of the windows
and of the values inside each, one multiplicative mask d per window where the stage
allows it, and the noise e in [0, d) that makes B's d·z + e hide z's low bits.

Every draw comes from the OS CSPRNG (:mod:`ppinfer.encoding.masks`) and is made before
any value is known, so the offline half can prepare a stage under its perturbations.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TypeVar, cast

from ppinfer.compiler.plan import MaskSettings
from ppinfer.compiler.program import LoweredStage
from ppinfer.encoding.masks import mask_multipliers, multiplier_noise, random_permutation

__all__ = ["Perturbation", "draw_perturbation", "perturbed", "unpermute"]

T = TypeVar("T")


@dataclass(frozen=True)
class Perturbation:
    """One stage's perturbations: window order, the z index sent at each position, the
    multiplicative mask d of each position (None: the stage allows none) with its noise e
    in [0, d) (B gets d·z + e), and d^p per window."""

    order: list[int]
    positions: list[int]
    scales: list[int] | None
    noise: list[int] | None
    folds: list[int] | None

    @property
    def divisors(self) -> list[int] | None:
        """d^p per window in window order: what the next layer's weights divide by."""
        return None if self.folds is None else unpermute(self.folds, self.order)


def draw_perturbation(stage: LoweredStage, masks: MaskSettings) -> Perturbation:
    """Fresh perturbations for ``stage``."""
    windows = stage.windows
    order = random_permutation(len(windows))
    group = len(windows[0])
    positions = [i for w in order for i in _shuffled(windows[w])]
    power = stage.activation.power
    if power is None:
        return Perturbation(order, positions, None, None, None)
    multipliers = mask_multipliers(len(order), masks.min_bits, masks.spread_bits)
    scales = [multipliers[position // group] for position in range(len(positions))]
    return Perturbation(
        order, positions, scales, multiplier_noise(scales), [d**power for d in multipliers]
    )


def perturbed(offsets: Sequence[int], p: Perturbation) -> list[int]:
    """Plaintext values in the order a stage sends them, scaled by its masks d, plus the
    masks' noise e: with the prepared d·(-W m), B decrypts d·z + e."""
    sent = [offsets[i] for i in p.positions]
    if p.scales is None or p.noise is None:
        return sent
    return [v * d + e for v, d, e in zip(sent, p.scales, p.noise, strict=True)]


def _shuffled(window: Sequence[int]) -> list[int]:
    """The window's values in a fresh random order (B must not learn positions in it)."""
    if len(window) == 1:
        return list(window)
    return [window[i] for i in random_permutation(len(window))]


def unpermute(permuted: Sequence[T], order: Sequence[int]) -> list[T]:
    """Put back in place what was sent as ``[items[i] for i in order]``."""
    items: list[T | None] = [None] * len(order)
    for position, source in enumerate(order):
        items[source] = permuted[position]
    return cast(list[T], items)
