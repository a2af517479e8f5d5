"""Vector fields f(t, x) for the ODE blocks.

Every field accepts ``t`` as a 0-d tensor (one time for the whole batch) or as a 1-d tensor
with one time per sample, and says so with ``time_per_sample = True``: the parareal block then
calls it once on several time slices stacked along the batch dimension (its fast path) instead
of vmapping it over the slices. Normalisation is GroupNorm: batch statistics would differ per
slice and per rank.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ConcatConv", "ConvVectorField", "MLPVectorField", "group_norm"]


def _time_per_sample(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-sample time to shape [batch] on x's device and dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class ConcatConv(nn.Module):
    """A same-size convolution that sees the time as an extra input channel (Chen et al. 2018).

    Args:
        in_channels: channels of x.
        out_channels: channels of the output.
        kernel_size: odd kernel size.
        dims: spatial dimensions of x: 2 for images [B, C, H, W], 1 for series [B, C, L].
    """

    time_per_sample = True

    def __init__(
        self, in_channels: int, out_channels: int, kernel_size: int = 3, dims: int = 2
    ) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if dims not in (1, 2):
            raise ValueError(f"dims must be 1 (series) or 2 (images), got {dims}")
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.conv = conv(in_channels + 1, out_channels, kernel_size, padding=kernel_size // 2)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        spatial = x.shape[2:]
        time = _time_per_sample(t, x).view(-1, 1, *(1 for _ in spatial)).expand(-1, 1, *spatial)
        return self.conv(torch.cat([time, x], dim=1))


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the most groups (up to 32) that divide ``channels``: per-sample
    statistics, the same on every slice/rank."""
    groups = max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)
    return nn.GroupNorm(groups, channels)


class ConvVectorField(nn.Module):
    """Convolutional vector field for image or series states: norm, ReLU, time-conv, twice,
    then a final norm.

    Args:
        channels: channels of the state (kept by the field).
        kernel_size: odd kernel size of both convolutions.
        dims: spatial dimensions of the state: 2 for images, 1 for series.
    """

    time_per_sample = True

    def __init__(self, channels: int, kernel_size: int = 3, dims: int = 2) -> None:
        super().__init__()
        self.norm1 = group_norm(channels)
        self.conv1 = ConcatConv(channels, channels, kernel_size, dims)
        self.norm2 = group_norm(channels)
        self.conv2 = ConcatConv(channels, channels, kernel_size, dims)
        self.norm3 = group_norm(channels)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)


class MLPVectorField(nn.Module):
    """Fully connected vector field for vector states, with time as an extra input.

    Args:
        dim: size of the state.
        hidden: width of the hidden layers.
        layers: number of hidden layers.
    """

    time_per_sample = True

    def __init__(self, dim: int, hidden: int = 64, layers: int = 2) -> None:
        super().__init__()
        widths = [dim + 1] + [hidden] * layers
        blocks: list[nn.Module] = []
        for width_in, width_out in zip(widths[:-1], widths[1:], strict=True):
            blocks += [nn.Linear(width_in, width_out), nn.Tanh()]
        blocks.append(nn.Linear(widths[-1], dim))
        self.net = nn.Sequential(*blocks)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time = _time_per_sample(t, x).unsqueeze(-1)
        return self.net(torch.cat([time, x], dim=-1))
