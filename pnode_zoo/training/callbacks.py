"""Callbacks of the training loop."""

from __future__ import annotations

import dataclasses

import pytorch_lightning as pl

from pnode_zoo.errors import UserInputError
from pnode_zoo.ode import PararealODEBlock

__all__ = ["PararealSchedule"]


def _value_at(schedule: dict[int, int], epoch: int) -> int:
    """The value of the last milestone at or before ``epoch``."""
    return schedule[max(e for e in schedule if e <= epoch)]


def _check_schedule(name: str, schedule: dict[int, int]) -> None:
    if 0 not in schedule:
        raise UserInputError(f"{name} must have a milestone at epoch 0, got {schedule}")
    if any(epoch < 0 or iters < 0 for epoch, iters in schedule.items()):
        raise UserInputError(f"{name} epochs and iteration counts must be >= 0, got {schedule}")


class PararealSchedule(pl.Callback):
    """Raise the parareal iteration limits of every ``PararealODEBlock`` over epochs.

    Few iterations early (inexact, cheap forward passes and gradients) and more later is
    gradient descent with errors that shrink as training converges. Milestones map an epoch
    to the limit that holds from that epoch on; limits above a block's slice count are clamped.

    Args:
        forward: epoch -> forward ``max_iters``, e.g. ``{0: 1, 5: 2, 10: 4}``.
        backward: epoch -> ``backward_max_iters`` (None: leave the blocks' own setting).
        eval_max_iters: forward limit during validation and test (None: the training limit).
    """

    def __init__(
        self,
        forward: dict[int, int],
        backward: dict[int, int] | None = None,
        eval_max_iters: int | None = None,
    ) -> None:
        _check_schedule("PararealSchedule.forward", forward)
        if backward is not None:
            _check_schedule("PararealSchedule.backward", backward)
        self.forward = dict(forward)
        self.backward = dict(backward) if backward is not None else None
        self.eval_max_iters = eval_max_iters

    @staticmethod
    def _blocks(module: pl.LightningModule) -> list[PararealODEBlock]:
        return [m for m in module.modules() if isinstance(m, PararealODEBlock)]

    def _apply(self, module: pl.LightningModule, forward: int, backward: int | None) -> None:
        for block in self._blocks(module):
            changes = {"max_iters": forward}
            if backward is not None:
                changes["backward_max_iters"] = backward
            block.options = dataclasses.replace(block.options, **changes)

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self._blocks(pl_module):
            raise UserInputError("PararealSchedule needs a model with a PararealODEBlock")

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        epoch = trainer.current_epoch
        forward = _value_at(self.forward, epoch)
        backward = _value_at(self.backward, epoch) if self.backward is not None else None
        self._apply(pl_module, forward, backward)
        pl_module.log("parareal/max_iters", float(forward), on_step=False, on_epoch=True)

    def _evaluation_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the next on_train_epoch_start restores the training limit
        if self.eval_max_iters is not None:
            self._apply(pl_module, self.eval_max_iters, None)

    on_validation_start = _evaluation_start
    on_test_start = _evaluation_start
