"""PyTorch modules ppinfer compiles that torch itself lacks (needs ``ppinfer[torch]``)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Square"]


class Square(nn.Module):
    """x * x elementwise: the activation of HE-only CNNs, evaluated exactly by B."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * x
