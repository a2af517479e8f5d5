"""LightningDataModules; their files live under ``datasets/``."""

from pnode_zoo.data.base import TensorDataModule
from pnode_zoo.data.digits import DigitsDataModule

__all__ = ["DigitsDataModule", "TensorDataModule"]
