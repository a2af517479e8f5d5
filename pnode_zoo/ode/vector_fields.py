"""Vector fields f(t, x) for the ODE blocks.

Every field accepts ``t`` as a 0-d tensor (one time for the whole batch) or as a 1-d tensor
with one time per sample. The parareal block uses the second form when it stacks several
time slices along the batch dimension, so a field must never assume one time per call.
Normalisation is GroupNorm: batch statistics would differ per slice and per rank.
"""

from __future__ import annotations

import torch
from torch import nn


def _time_per_sample(t: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a scalar or per-sample time to shape [batch] on x's device and dtype."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


class ConcatConv2d(nn.Module):
    """A 3x3 convolution that sees the time as an extra input channel (Chen et al. 2018).

    Args:
        in_channels: channels of x.
        out_channels: channels of the output.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels + 1, out_channels, kernel_size=3, padding=1)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time = _time_per_sample(t, x).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])
        return self.conv(torch.cat([time, x], dim=1))


def _group_norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(32, channels), channels)


class ConvVectorField(nn.Module):
    """Convolutional vector field for image states: norm, ReLU, time-conv, twice.

    Args:
        channels: channels of the state (kept by the field).
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm1 = _group_norm(channels)
        self.conv1 = ConcatConv2d(channels, channels)
        self.norm2 = _group_norm(channels)
        self.conv2 = ConcatConv2d(channels, channels)
        self.norm3 = _group_norm(channels)

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


class ConcatConv1d(nn.Module):
    """A 1-d convolution (odd kernel, same length) that sees the time as an extra channel.

    Args:
        in_channels: channels of x.
        out_channels: channels of the output.
        kernel_size: odd kernel size.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(
            in_channels + 1, out_channels, kernel_size=kernel_size, padding=kernel_size // 2
        )

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        time = _time_per_sample(t, x).view(-1, 1, 1).expand(-1, 1, x.shape[-1])
        return self.conv(torch.cat([time, x], dim=1))


class ConvVectorField1d(nn.Module):
    """Convolutional vector field for series states [batch, channels, length]; as
    ``ConvVectorField``: norm, ReLU, time-conv, twice, then a final norm.

    Args:
        channels: channels of the state (kept by the field).
        kernel_size: odd kernel size of both convolutions.
    """

    def __init__(self, channels: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.norm1 = _group_norm(channels)
        self.conv1 = ConcatConv1d(channels, channels, kernel_size)
        self.norm2 = _group_norm(channels)
        self.conv2 = ConcatConv1d(channels, channels, kernel_size)
        self.norm3 = _group_norm(channels)

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(t, torch.relu(self.norm1(x)))
        out = self.conv2(t, torch.relu(self.norm2(out)))
        return self.norm3(out)
