"""LightningModules (what to compute) and callbacks of the training loop."""

from pnode_zoo.tasks.classification import Classifier

__all__ = ["Classifier"]
