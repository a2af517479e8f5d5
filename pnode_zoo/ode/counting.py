"""Counting evaluations of a vector field (the unit of every cost figure in pnode_zoo)."""

from __future__ import annotations

import torch
from torch import nn


class CountingField(nn.Module):
    """Wraps f(t, x) and counts its calls in ``calls`` (reset by the owner).

    Args:
        func: the vector field to wrap.
    """

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.func(t, x)
