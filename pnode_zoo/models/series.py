"""Time-series classifiers for inputs [batch, channels, length] (UCR/UEA archives).

``fcn`` and ``resnet1d`` are the strong baselines of Wang et al. (2017), "Time series
classification from scratch with deep neural networks", as re-implemented by Fawaz et al.
(2019); ``odenet1d`` and ``odenet1d_parareal`` are their ODE-Net counterparts: a convolutional
stem, one ODE block (torchdiffeq or parareal) of a 1-d convolutional vector field, and a
pooling head. All are ``StemBlockHead``s, so ``nfe`` is the ODE block's evaluation count
(None for the two baselines).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from pnode_zoo.errors import UserInputError
from pnode_zoo.models.common import (
    StemBlockHead,
    parareal_block,
    register_twins,
    torchdiffeq_block,
)
from pnode_zoo.models.registry import register_model
from pnode_zoo.ode import ConvVectorField, group_norm

__all__ = [
    "ResidualBlock1d",
    "conv_bn_relu",
    "fcn",
    "odenet1d",
    "odenet1d_parareal",
    "pooling_head",
    "resnet1d",
    "same_conv",
    "series_head",
    "series_stem",
]


def same_conv(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """A length-keeping convolution: (k-1)//2 zeros left, k//2 right (Keras's 'same')."""
    padding = nn.ConstantPad1d(((kernel_size - 1) // 2, kernel_size // 2), 0.0)
    return nn.Sequential(padding, nn.Conv1d(in_channels, out_channels, kernel_size))


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int) -> nn.Sequential:
    """Length-keeping convolution, batch norm, ReLU."""
    return nn.Sequential(
        same_conv(in_channels, out_channels, kernel_size), nn.BatchNorm1d(out_channels), nn.ReLU()
    )


def pooling_head(channels: int, num_classes: int) -> nn.Sequential:
    """Global average pooling over time and a linear classifier."""
    return nn.Sequential(nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Linear(channels, num_classes))


def series_stem(
    in_channels: int,
    width: int,
    kernel_size: int,
    downsample: int,
    batch_norm: bool,
    layers: int = 1,
) -> nn.Sequential:
    """A length-keeping convolution to ``width`` channels (with BatchNorm and ReLU, FCN's first
    layer, if ``batch_norm``), FCN's next conv-BN-ReLU layers (kernels 5, 3) up to ``layers``
    in all, then ``downsample`` stride-2 convolutions."""
    if not 1 <= layers <= 3 or (layers > 1 and not batch_norm):
        raise UserInputError(
            f"stem_layers must be 1, or 2 to 3 with stem_batch_norm: true, got {layers}"
        )
    first = conv_bn_relu if batch_norm else same_conv
    modules: list[nn.Module] = [first(in_channels, width, kernel_size)]
    modules += [conv_bn_relu(width, width, k) for k in (5, 3)[: layers - 1]]
    for _ in range(downsample):
        modules += [group_norm(width), nn.ReLU(), nn.Conv1d(width, width, 4, stride=2, padding=1)]
    return nn.Sequential(*modules)


def series_head(width: int, num_classes: int) -> nn.Sequential:
    """Norm and ReLU of the ODE state, then the pooling head."""
    return nn.Sequential(group_norm(width), nn.ReLU(), pooling_head(width, num_classes))


class ResidualBlock1d(nn.Module):
    """Three conv-BN layers (kernels 8, 5, 3) with a shortcut, then ReLU (Wang et al. 2017).

    Args:
        in_channels: channels of the input.
        out_channels: channels of the output (a 1x1 convolution matches the shortcut).
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            conv_bn_relu(in_channels, out_channels, 8),
            conv_bn_relu(out_channels, out_channels, 5),
            same_conv(out_channels, out_channels, 3),
            nn.BatchNorm1d(out_channels),
        )
        resize = in_channels != out_channels
        projection = [nn.Conv1d(in_channels, out_channels, 1)] if resize else []
        self.shortcut = nn.Sequential(*projection, nn.BatchNorm1d(out_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


@register_model
def fcn(num_classes: int = 2, input_shape: Sequence[int] = (1, 150)) -> StemBlockHead:
    """Fully convolutional network (Wang et al. 2017): 128-256-128 filters, kernels 8/5/3.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, length) of the series.
    """
    stem = conv_bn_relu(input_shape[0], 128, 8)
    block = nn.Sequential(conv_bn_relu(128, 256, 5), conv_bn_relu(256, 128, 3))
    return StemBlockHead(stem, block, pooling_head(128, num_classes))


@register_model
def resnet1d(
    num_classes: int = 2,
    input_shape: Sequence[int] = (1, 150),
    widths: Sequence[int] = (64, 128, 128),
) -> StemBlockHead:
    """1-d ResNet (Wang et al. 2017): residual blocks of three convolutions, kernels 8/5/3.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, length) of the series.
        widths: filters of each residual block.
    """
    if not widths:
        raise UserInputError("widths must name at least one block width")
    channels = [input_shape[0], *widths[:-1]]
    blocks = [ResidualBlock1d(c_in, c_out) for c_in, c_out in zip(channels, widths, strict=True)]
    head = pooling_head(widths[-1], num_classes)
    return StemBlockHead(blocks[0], nn.Sequential(*blocks[1:]), head)


def _odenet1d(
    block: Callable[..., nn.Module],
    num_classes: int = 2,
    input_shape: Sequence[int] = (1, 150),
    width: int = 64,
    stem_kernel: int = 7,
    stem_batch_norm: bool = False,
    stem_layers: int = 1,
    downsample: int = 0,
    kernel_size: int = 3,
) -> StemBlockHead:
    """ODE-Net for series: conv stem -> ODE block (1-d conv vector field) -> pooling head.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, length) of the series.
        width: channels of the ODE state.
        stem_kernel: kernel size of the stem's first convolution.
        stem_batch_norm: BatchNorm and ReLU after that convolution (it runs once, before the
            ODE block, so batch statistics are safe there, unlike inside the field).
        stem_layers: conv-BN-ReLU layers in the stem (FCN's first layers, kernels
            ``stem_kernel``, 5, 3); more than 1 needs ``stem_batch_norm``.
        downsample: stride-2 convolutions in the stem (halve the length each).
        kernel_size: odd kernel size of the vector field's convolutions.
    """
    body = block(lambda: ConvVectorField(width, kernel_size, dims=1))
    stem = series_stem(
        input_shape[0], width, stem_kernel, downsample, stem_batch_norm, stem_layers
    )
    return StemBlockHead(stem, body, series_head(width, num_classes))


odenet1d, odenet1d_parareal = register_twins(
    _odenet1d,
    odenet1d=("ODE-Net for series: conv stem -> torchdiffeq ODE block (1-d conv vector "
              "field) -> head.", torchdiffeq_block),
    odenet1d_parareal=("ODE-Net for series with a parareal block: ``odenet1d``'s stem and "
                       "head around a PararealODEBlock.", parareal_block),
)
