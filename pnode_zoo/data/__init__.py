"""LightningDataModules; their files live under ``datasets/``."""

from pnode_zoo.data.base import TensorDataModule
from pnode_zoo.data.digits import DigitsDataModule
from pnode_zoo.data.images import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from pnode_zoo.data.trajectories import (
    ForecastDataModule,
    LotkaVolterraDataModule,
    TrajectoryDataModule,
)
from pnode_zoo.data.ucr import UCRDataModule

__all__ = [
    "CIFAR10DataModule",
    "DigitsDataModule",
    "FashionMNISTDataModule",
    "ForecastDataModule",
    "LotkaVolterraDataModule",
    "MNISTDataModule",
    "TensorDataModule",
    "TrajectoryDataModule",
    "UCRDataModule",
]
