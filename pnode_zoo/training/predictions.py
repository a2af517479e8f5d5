"""``predict``'s output: one CSV file per run, optionally printed."""

from __future__ import annotations

import csv
import io
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.callbacks import BasePredictionWriter
from torch.utils.data import DistributedSampler

__all__ = ["PredictionWriter"]


class PredictionWriter(BasePredictionWriter):
    """Write the predictions of ``predict`` as CSV into the run directory.

    The rows come from the task's ``prediction_rows`` (``Classifier``: one row per sample with
    ``sample, index, target, prediction, probability`` and ``class`` where the data module
    names its classes; ``TrajectoryRegressor``: one row per sample, forecast time and state
    component with ``sample, step, time, component, target, forecast``). ``sample`` counts the
    predicted split (the test split) in order; ``index`` is the sample's position in the source
    data set where the data module knows it. With data-parallel ranks each rank writes its own
    shard to ``<stem>.rank<r>.csv``.

    Args:
        filename: the file's name in the run directory.
        stdout: also print the predictions, as CSV, to standard output.
    """

    def __init__(self, filename: str = "predictions.csv", stdout: bool = False) -> None:
        super().__init__(write_interval="epoch")
        self.filename = filename
        self.stdout = stdout
        self.path: Path | None = None  # where the last predictions went

    def write_on_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           predictions: Sequence[Any], batch_indices: Sequence[Any]) -> None:
        sharded = trainer.world_size > 1 and _sharded(trainer.predict_dataloaders)
        if not (sharded or trainer.is_global_zero):
            return  # every rank holds the same predictions: rank 0 writes them
        nested = predictions and isinstance(predictions[0], list)  # one list per dataloader
        outputs = predictions[0] if nested else predictions
        rows = pl_module.prediction_rows(list(outputs), trainer.datamodule)
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=list(rows[0]) if rows else ["sample"])
        writer.writeheader()
        writer.writerows(rows)
        name = Path(self.filename)
        if sharded:
            name = name.with_name(f"{name.stem}.rank{trainer.global_rank}{name.suffix}")
        run_dir = Path(trainer.default_root_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        self.path = run_dir / name
        partial = self.path.with_name(f".{name}.partial")
        partial.write_text(text.getvalue())
        os.replace(partial, self.path)  # a reader never sees half a file
        if self.stdout:
            sys.stdout.write(text.getvalue())
            sys.stdout.flush()


def _sharded(loaders: Any) -> bool:
    """Whether Lightning gave the predict loaders a distributed sampler (each rank its shard);
    for predictions it sits in the batch sampler."""
    loaders = loaders if isinstance(loaders, list | tuple) else [loaders]
    samplers = [s for loader in loaders
                for s in (getattr(loader, "sampler", None),
                          getattr(getattr(loader, "batch_sampler", None), "sampler", None))]
    return any(isinstance(sampler, DistributedSampler) for sampler in samplers)
