"""What runs around a task: callbacks, checkpoints, monitoring, figures, predictions.

Below the tasks (they use its checkpoint callback, figure drawing and logged keys); it knows a
task only by what it calls on it (``figures``, ``prediction_rows``, ``checkpoint_metric``).
"""

from pnode_zoo.training.callbacks import PararealSchedule
from pnode_zoo.training.checkpoints import AtomicCheckpointIO, RandomStateCheckpoint
from pnode_zoo.training.finite import StopOnNonFinite
from pnode_zoo.training.monitor import RunMonitor
from pnode_zoo.training.predictions import PredictionWriter

__all__ = [
    "AtomicCheckpointIO",
    "PararealSchedule",
    "PredictionWriter",
    "RandomStateCheckpoint",
    "RunMonitor",
    "StopOnNonFinite",
]
