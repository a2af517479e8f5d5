"""A small neural CDE problem shared by the CDE tests and their 2-rank worker."""

from __future__ import annotations

import torch
import torchcde
from torch import nn

F64 = torch.float64


class CDEFunc(nn.Module):
    """f(t, z) -> [batch, hidden, channels], torchcde's signature; autonomous."""

    def __init__(self, hidden: int, channels: int, width: int = 16) -> None:
        super().__init__()
        self.hidden, self.channels = hidden, channels
        self.net = nn.Sequential(nn.Linear(hidden, width), nn.Tanh(),
                                 nn.Linear(width, hidden * channels))

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).view(*z.shape[:-1], self.hidden, self.channels).tanh()


def series(batch: int, length: int, channels: int, seed: int = 0) -> torch.Tensor:
    """A rough random walk, time as the first channel (as a model would give it)."""
    generator = torch.Generator().manual_seed(seed)
    walk = 0.3 * torch.randn(batch, length, channels - 1, generator=generator, dtype=F64)
    time = torch.linspace(0, 1, length, dtype=F64)[:, None].expand(batch, length, 1)
    return torch.cat([time, walk.cumsum(dim=1)], dim=-1)


def coefficients(x: torch.Tensor, interpolation: str) -> torch.Tensor:
    if interpolation == "linear":
        return torchcde.linear_interpolation_coeffs(x)
    return torchcde.hermite_cubic_coefficients_with_backward_differences(x)


def cdeint_final(func: nn.Module, coeffs: torch.Tensor, z0: torch.Tensor,
                 interpolation: str = "cubic") -> torch.Tensor:
    """The plain model's solve: torchcde.cdeint, rk4, one step per observation, differentiated
    through the solver (``adjoint=False``: cdeint's default adjoint is the continuous one)."""
    path = (torchcde.LinearInterpolation if interpolation == "linear"
            else torchcde.CubicSpline)(coeffs)
    return torchcde.cdeint(X=path, func=func, z0=z0, t=path.interval, method="rk4",
                           options={"step_size": 1}, adjoint=False)[:, -1]
