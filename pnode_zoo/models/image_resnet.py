"""torchvision's ResNet-18 adapted to small images (28x28, 32x32), the standard CIFAR variant.

The first convolution becomes 3x3 with stride 1 and the max-pool is dropped, so the four
stages see 32x32 (or 28x28) down to 4x4 feature maps instead of ImageNet's 56x56 to 7x7.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from pnode_zoo.models.common import StemBlockHead
from pnode_zoo.models.registry import register_model

__all__ = ["resnet18"]


@register_model
def resnet18(num_classes: int = 10, input_shape: Sequence[int] = (3, 32, 32)) -> StemBlockHead:
    """ResNet-18 (torchvision) with a 3x3 stride-1 first convolution and no max-pool.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, height, width) of the images.
    """
    from torchvision.models import resnet18 as torchvision_resnet18  # heavy: only when built

    net = torchvision_resnet18(num_classes=num_classes)
    stem = nn.Sequential(
        nn.Conv2d(input_shape[0], 64, kernel_size=3, stride=1, padding=1, bias=False),
        net.bn1,
        net.relu,
    )
    stages = nn.Sequential(net.layer1, net.layer2, net.layer3, net.layer4)
    return StemBlockHead(stem, stages, nn.Sequential(net.avgpool, nn.Flatten(), net.fc))
