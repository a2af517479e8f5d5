"""Stop training before a NaN or infinite loss or gradient reaches the weights."""

from __future__ import annotations

import pytorch_lightning as pl
import torch
from torch.optim import Optimizer

__all__ = ["StopOnNonFinite", "training_position"]


def training_position(trainer: pl.Trainer) -> str:
    """Where the trainer is, for a message: "epoch 3, batch 7 (global step 52)"."""
    batch = trainer.fit_loop.epoch_loop.batch_idx
    return f"epoch {trainer.current_epoch}, batch {batch} (global step {trainer.global_step})"


class StopOnNonFinite(pl.Callback):
    """Raise FloatingPointError, naming the step, before an optimiser step that would apply a
    non-finite loss or gradient, so no weight is ever updated from NaN or Inf.

    Lightning's ``EarlyStopping(check_finite=True)`` looks only at a monitored metric after
    validation, when the weights have already taken every step of the epoch, and
    ``detect_anomaly`` slows every backward pass; this check costs one pass over the gradients
    per step. The gradients are checked after DistributedDataParallel has averaged them, so
    every rank stops at the same step.
    """

    def __init__(self) -> None:
        self._loss_finite = True

    def on_before_backward(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           loss: torch.Tensor) -> None:
        self._loss_finite = self._loss_finite and bool(torch.isfinite(loss.detach()).all())

    def on_before_optimizer_step(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                                 optimizer: Optimizer) -> None:
        loss_finite, self._loss_finite = self._loss_finite, True
        problem = None if loss_finite else "the training loss is NaN or infinite"
        if problem is None:
            bad = [name for name, p in pl_module.named_parameters()
                   if p.grad is not None and not bool(torch.isfinite(p.grad).all())]
            if bad:
                problem = f"the gradient of {bad[0]} (and {len(bad) - 1} more) is NaN or infinite"
        if problem is not None:
            raise FloatingPointError(
                f"{problem} at {training_position(trainer)}; the weights were not updated with "
                "it. Lower the learning rate (--model.init_args.lr) or resume from the last "
                "checkpoint (--ckpt_path last)"
            )
