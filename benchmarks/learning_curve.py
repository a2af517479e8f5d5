"""A callback for benchmarks: the test metric after every training epoch, against training time.

Added to a fit by ``benchmarks/time_to_accuracy.py`` (``--trainer.callbacks+=...``). After each
training epoch it evaluates the test split (every rank together: a time-parallel model's
forward pass is collective) and rank 0 appends one JSON line to ``path``: the epoch, the
cumulative training seconds (training epochs only: evaluation is excluded) and the test
metric (MSE for trajectory tasks, accuracy for classifiers). For a model with a parareal block,
the row also holds the median and largest forward K of the epoch's training calls and, with a
warm-start cache, its hit rate over them, as the CLI's ``RunMonitor`` counted them (rank 0's
calls under ``time_parallel``). The test split is evaluated without the samples' indices, so
it neither fills nor reads the warm-start cache (its hit rate stays the training calls').
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from time import perf_counter

import pytorch_lightning as pl
import torch

from pnode_zoo.tasks import Classifier
from pnode_zoo.training import RunMonitor


class LearningCurve(pl.Callback):
    """Append {"epoch", "train_seconds", "metric", "metric_name"} per epoch to ``path``, and
    "forward_iters_median", "forward_iters_max" and "cache_hit_rate" where a ``RunMonitor``
    among the trainer's callbacks counted parareal calls (see the module doc).

    Args:
        path: JSON-lines file to append to.
    """

    def __init__(self, path: str) -> None:
        self.path, self.seconds, self.tic = Path(path), 0.0, 0.0

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.tic = perf_counter()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.seconds += perf_counter() - self.tic
        parareal = self.parareal(trainer)  # before the test split's calls
        name, value = self.evaluate(trainer, pl_module)
        if trainer.is_global_zero:
            row = {"epoch": trainer.current_epoch, "train_seconds": self.seconds,
                   "metric_name": name, "metric": value, **parareal}
            with self.path.open("a") as file:
                file.write(json.dumps(row) + "\n")

    @staticmethod
    def parareal(trainer: pl.Trainer) -> dict[str, float]:
        """The epoch's forward K (median, max) and cache hit rate from the trainer's
        ``RunMonitor``; empty without one or without parareal calls."""
        monitor = next((c for c in trainer.callbacks if isinstance(c, RunMonitor)), None)
        iterations, hit_rate = monitor.epoch_iterations() if monitor else ([], None)
        if not iterations:
            return {}
        row = {"forward_iters_median": statistics.median(iterations),
               "forward_iters_max": max(iterations)}
        return row if hit_rate is None else {**row, "cache_hit_rate": hit_rate}

    @staticmethod
    def evaluate(trainer: pl.Trainer, pl_module: pl.LightningModule) -> tuple[str, float]:
        """The test metric of the current weights, in eval mode and without gradients."""
        classifier = isinstance(pl_module, Classifier)
        total, count = 0.0, 0
        was_training = pl_module.training
        pl_module.eval()
        with torch.no_grad():
            for batch in trainer.datamodule.test_dataloader():
                batch = [tensor.to(pl_module.device) for tensor in batch]
                # a classifier's batch may carry each sample's index after the labels: left
                # out, so the test split stays out of a warm-start cache
                targets = batch[1] if classifier else batch[-1]
                outputs = pl_module.logits(batch[:2]) if classifier else pl_module(*batch[:-1])
                if classifier:
                    total += (outputs.argmax(dim=-1) == targets).sum().item()
                    count += len(targets)
                else:
                    total += (outputs - targets).square().sum().item()
                    count += targets.numel()
        pl_module.train(was_training)
        return ("test/acc" if classifier else "test/mse"), total / count
