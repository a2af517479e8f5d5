"""Image classifiers that share one stem and one head: ODE-Net (Chen et al. 2018) and a ResNet.

The stem maps the image to a feature map of ``width`` channels (with ``downsample`` stride-2
convolutions for 28x28/32x32 inputs), the middle block transforms it (an ODE block or k
residual blocks, the forward-Euler network of the same vector field), the head pools and
classifies. Keeping stem and head identical makes the middle blocks directly comparable.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pnode_zoo.models.common import StemBlockHead, parareal_block
from pnode_zoo.models.registry import register_model
from pnode_zoo.ode import ConvVectorField, ODEBlock, PararealOptions, group_norm

__all__ = ["ResidualStack", "image_head", "image_stem", "odenet", "odenet_parareal", "resnet"]


def image_stem(in_channels: int, width: int, downsample: int) -> nn.Sequential:
    """A 3x3 convolution to ``width`` channels, then ``downsample`` stride-2 4x4 convolutions."""
    layers: list[nn.Module] = [nn.Conv2d(in_channels, width, 3, padding=1)]
    for _ in range(downsample):
        layers += [group_norm(width), nn.ReLU(), nn.Conv2d(width, width, 4, stride=2, padding=1)]
    return nn.Sequential(*layers)


def image_head(width: int, num_classes: int) -> nn.Sequential:
    """Norm, ReLU, global average pooling and a linear classifier."""
    pool = [nn.AdaptiveAvgPool2d(1), nn.Flatten()]
    return nn.Sequential(group_norm(width), nn.ReLU(), *pool, nn.Linear(width, num_classes))


class ResidualStack(nn.Module):
    """x_{k+1} = x_k + f_k(t_k, x_k): the forward-Euler network of k conv vector fields.

    Args:
        fields: one vector field per residual block.
    """

    def __init__(self, fields: Sequence[nn.Module]) -> None:
        super().__init__()
        self.fields = nn.ModuleList(fields)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, field in enumerate(self.fields):
            x = x + field(torch.tensor(k / len(self.fields), dtype=x.dtype), x)
        return x


@register_model
def odenet(
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 8, 8),
    width: int = 32,
    downsample: int = 0,
    t1: float = 1.0,
    method: str = "rk4",
    steps: int = 4,
    rtol: float = 1e-3,
    atol: float = 1e-4,
    adjoint: bool = False,
) -> StemBlockHead:
    """ODE-Net: stem -> torchdiffeq ODE block (one conv vector field) -> head.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, height, width) of the images.
        width: channels of the ODE state.
        downsample: stride-2 convolutions in the stem (2 for 28x28 inputs).
        t1: integration horizon [0, t1].
        method: torchdiffeq method.
        steps: fixed-grid steps over [0, t1].
        rtol: relative tolerance (adaptive methods).
        atol: absolute tolerance (adaptive methods).
        adjoint: backpropagate with torchdiffeq's continuous adjoint.
    """
    block = ODEBlock(ConvVectorField(width), 0.0, t1, method, steps, rtol, atol, adjoint)
    return StemBlockHead(
        image_stem(input_shape[0], width, downsample), block, image_head(width, num_classes)
    )


@register_model
def odenet_parareal(
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 8, 8),
    width: int = 32,
    downsample: int = 0,
    t1: float = 1.0,
    per_slice: bool = False,
    parareal: PararealOptions | Mapping[str, Any] | None = None,
) -> StemBlockHead:
    """ODE-Net with a parareal block: stem -> PararealODEBlock (conv vector field) -> head.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, height, width) of the images.
        width: channels of the ODE state.
        downsample: stride-2 convolutions in the stem (2 for 28x28 inputs).
        t1: integration horizon [0, t1].
        per_slice: one vector field per slice (a continuous-depth ResNet of N stages) instead
            of one shared field.
        parareal: the block's ``PararealOptions`` (a mapping of some of its fields: slices,
            coarse and fine solvers, tolerance, iteration cap, gradient), on top of the zoo's
            defaults ``ZOO_PARAREAL`` (4 slices of one RK4 step, one Euler coarse step,
            tol 1e-3, the exact ``unrolled`` gradient).
    """
    block = parareal_block(lambda: ConvVectorField(width), t1, per_slice, parareal)
    return StemBlockHead(
        image_stem(input_shape[0], width, downsample), block, image_head(width, num_classes)
    )


@register_model
def resnet(
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 8, 8),
    width: int = 32,
    downsample: int = 0,
    num_blocks: int = 4,
) -> StemBlockHead:
    """ResNet baseline: the ODE-Net's stem and head around ``num_blocks`` residual blocks.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, height, width) of the images.
        width: channels of the residual state.
        downsample: stride-2 convolutions in the stem (2 for 28x28 inputs).
        num_blocks: residual blocks, each x + f_k(x) with its own conv vector field.
    """
    block = ResidualStack([ConvVectorField(width) for _ in range(num_blocks)])
    return StemBlockHead(
        image_stem(input_shape[0], width, downsample), block, image_head(width, num_classes)
    )
