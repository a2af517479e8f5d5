"""Image classifiers that share one stem and one head: ODE-Net (Chen et al. 2018) and a ResNet.

The stem maps the image to a feature map of ``width`` channels (with ``downsample`` stride-2
convolutions for 28x28/32x32 inputs), the middle block transforms it (an ODE block or k
residual blocks, the forward-Euler network of the same vector field), the head pools and
classifies. Keeping stem and head identical makes the middle blocks directly comparable.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

from pnode_zoo.models.common import (
    StemBlockHead,
    parareal_block,
    register_twins,
    residual_stack,
    torchdiffeq_block,
)
from pnode_zoo.ode import ConvVectorField, group_norm

__all__ = ["image_head", "image_stem", "odenet", "odenet_parareal", "resnet"]


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


def _odenet(
    block: Callable[..., nn.Module],
    num_classes: int = 10,
    input_shape: Sequence[int] = (1, 8, 8),
    width: int = 32,
    downsample: int = 0,
) -> StemBlockHead:
    """The image classifiers' frame: stem -> ``block`` of conv vector fields -> head.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, height, width) of the images.
        width: channels of the state the block transforms.
        downsample: stride-2 convolutions in the stem (2 for 28x28 inputs).
    """
    body = block(lambda: ConvVectorField(width))
    return StemBlockHead(
        image_stem(input_shape[0], width, downsample), body, image_head(width, num_classes)
    )


odenet, odenet_parareal, resnet = register_twins(
    _odenet,
    odenet=("ODE-Net: stem -> torchdiffeq ODE block (one conv vector field) -> head.",
            torchdiffeq_block),
    odenet_parareal=("ODE-Net with a parareal block: stem -> PararealODEBlock (conv vector "
                     "field) -> head.", parareal_block),
    resnet=("ResNet baseline: the ODE-Net's stem and head around ``num_blocks`` residual "
            "blocks.", residual_stack),
)
