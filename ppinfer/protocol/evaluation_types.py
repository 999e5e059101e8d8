"""What A's evaluator hands out and takes in: the prepared offline half of a request (a
request entry), the client-aided outcome, and the callbacks (progress, the stage answerer,
the test observer).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from gmpy2 import mpz

from ppinfer.compiler.activations import StageCall
from ppinfer.encoding.packing import SlotLayout
from ppinfer.protocol.perturbations import Perturbation

__all__ = ["Activator", "EncryptedOutcome", "Observer", "Prepared", "PreparedStage", "Progress"]


@dataclass(frozen=True)
class PreparedStage:
    """One stage's input, prepared: its perturbations, and A's mask rho of B's share
    d·(-W m) + rho of its layer's mask part, in the order the stage sends its values."""

    perturbation: Perturbation
    rho: list[int]


@dataclass(frozen=True)
class Prepared:
    """The offline half of one request, a request entry B holds the other half of: every
    layer's integer weights (folded with the previous stage's masks), every stage's
    perturbations and share mask, and the output's permutation and share mask. The online
    half is plaintext arithmetic on these."""

    entry_id: str
    weights: list[npt.NDArray[np.int64]]
    stages: list[PreparedStage]
    seal_order: list[int]
    seal_rho: list[int]

    @property
    def instance(self) -> str:
        """The key server instance that holds the entry's other half."""
        return self.entry_id.partition(".")[0]


@dataclass(frozen=True)
class EncryptedOutcome:
    """Client-aided mode: the logits, packed under the client's own key."""

    packed: list[mpz]
    layout: SlotLayout


#: Test instrumentation: called with (what, values) for everything A receives in the clear,
#: and ("multipliers", the d of each position sent) so view tests can check B's view.
Observer = Callable[[str, object], None]
Progress = Callable[[int, int], None]
#: Answers one activation stage: packed, perturbed values in, a fresh ciphertext per window out.
Activator = Callable[[StageCall, list[mpz]], list[mpz]]
