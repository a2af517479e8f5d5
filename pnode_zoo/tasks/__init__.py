"""LightningModules (what to compute) and callbacks of the training loop."""

from pnode_zoo.tasks.classification import Classifier
from pnode_zoo.tasks.trajectory import TrajectoryRegressor

__all__ = ["Classifier", "TrajectoryRegressor"]
