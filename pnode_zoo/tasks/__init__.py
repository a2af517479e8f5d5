"""LightningModules: what to compute, the loss, metrics, optimiser and logging of each task."""

from pnode_zoo.tasks.classification import Classifier
from pnode_zoo.tasks.trajectory import TrajectoryRegressor

__all__ = ["Classifier", "TrajectoryRegressor"]
