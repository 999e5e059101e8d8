"""What the client runs on the unmasked logits: the model's trailing softmax or sigmoid."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["client_activation"]


def client_activation(name: str, logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Apply the plan's client-side activation ("" leaves the logits as they are)."""
    if name in ("softmax", "log_softmax"):
        shifted = np.exp(logits - np.max(logits))
        probabilities = shifted / np.sum(shifted)
        scores = np.log(probabilities) if name == "log_softmax" else probabilities
        return np.asarray(scores, dtype=np.float64)
    if name == "sigmoid":
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)
    return logits
