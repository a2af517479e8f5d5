"""Shared fixtures of the ODE numerics tests: a fixed seed and fields."""

from __future__ import annotations

import pytest
import torch
from torch import nn


@pytest.fixture(autouse=True)
def _fixed_seed():
    torch.manual_seed(0)


class LinearField(nn.Module):
    """f(t, x) = A x + t b with trainable A and b; t is 0-d or one time per sample."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor | None = None) -> None:
        super().__init__()
        self.a = nn.Parameter(a.clone())
        self.b = nn.Parameter(torch.zeros(a.shape[0], dtype=a.dtype) if b is None else b.clone())

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        return x @ self.a.T + t[:, None] * self.b


@pytest.fixture
def linear_field():
    """The class LinearField(A, b=None)."""
    return LinearField


@pytest.fixture
def rotation() -> torch.Tensor:
    """A damped rotation: eigenvalues -0.5 +- 2i."""
    return torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=torch.float64)


@pytest.fixture
def stiff() -> torch.Tensor:
    """Symmetric with eigenvalues -1000, -1 and -0.5."""
    q, _ = torch.linalg.qr(torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0], [0.3, 0.2, 2.0]]))
    return (q @ torch.diag(torch.tensor([-1000.0, -1.0, -0.5])) @ q.T).double()
