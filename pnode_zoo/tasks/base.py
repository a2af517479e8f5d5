"""What every task shares: the network from the registry, parameter count, NFE logging, and the
optimiser (AdamW with linear warm-up and a cosine decay per step)."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from torch import nn

from pnode_zoo.errors import UserInputError
from pnode_zoo.hub import create_model

__all__ = ["Task"]


class Task(pl.LightningModule):
    """Base of the tasks: builds ``self.net`` with ``create_model`` and configures AdamW.

    Subclasses save their hyperparameters, which must include ``lr``, ``weight_decay`` and
    ``warmup_epochs`` (checked by ``check_optimiser_options``), name the validation metric that
    picks the best checkpoint in ``checkpoint_metric``, and turn ``predict_step`` outputs into
    rows of ``predictions.csv`` in ``prediction_rows``.

    Args:
        arch: registered model name.
        arch_args: options of that model.
        pretrained: a pretrained name (``python -m pnode_zoo pretrained list``) to start from:
            the network is that card's architecture and weights (``arch`` is not used;
            ``arch_args`` override the card's options; another number of classes gets a new
            head).
        **model_kwargs: the data-dependent options the CLI links from the data module.
    """

    checkpoint_metric: tuple[str, str] = ("val/acc", "max")  # (metric, "max" or "min")

    def __init__(self, arch: str, arch_args: dict[str, Any] | None, pretrained: str | None = None,
                 **model_kwargs: Any) -> None:
        super().__init__()
        if arch_args is not None and not isinstance(arch_args, dict):
            raise UserInputError(
                f"model.arch_args must be a mapping of {arch}'s options, such as "
                f"{{width: 32}}, got {arch_args!r}"
            )
        options = {**model_kwargs, **(arch_args or {})}
        self.net: nn.Module = (create_model(pretrained, pretrained=True, **options) if pretrained
                               else create_model(arch, **options))

    @staticmethod
    def check_optimiser_options(lr: float, weight_decay: float, warmup_epochs: int) -> None:
        """ValueError naming the option if the optimiser's settings are out of range."""
        if not (math.isfinite(lr) and lr > 0):
            raise UserInputError(f"model.lr must be a positive number, got {lr}")
        if not (math.isfinite(weight_decay) and weight_decay >= 0):
            raise UserInputError(f"model.weight_decay must be >= 0, got {weight_decay}")
        if warmup_epochs < 0:
            raise UserInputError(f"model.warmup_epochs must be >= 0, got {warmup_epochs}")

    def prediction_rows(self, outputs: list[Any], datamodule: Any) -> list[dict[str, Any]]:
        """The rows of ``predictions.csv`` from the ``predict_step`` outputs, in order."""
        raise NotImplementedError

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of the network."""
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def log_nfe(self, split: str) -> None:
        """Log the network's evaluations of f in the last forward (ODE models only)."""
        nfe = getattr(self.net, "nfe", None)
        if nfe is not None:
            self.log(f"{split}/nfe", float(nfe), on_step=split == "train", on_epoch=True,
                     sync_dist=True)

    def configure_model(self) -> None:
        # Lightning converts a model to a "-true" precision (e.g. 64-true) only after it has
        # loaded a checkpoint into it; converting here, before the load, keeps float64
        # weights exact when a run resumes (the conversion is idempotent). `load_from_checkpoint`
        # calls this hook too, outside any Trainer: nothing to convert then.
        try:
            trainer = self.trainer
        except RuntimeError:  # not attached to a Trainer
            return
        trainer.precision_plugin.convert_module(self)

    def figures(self, split: str) -> dict[str, Figure]:
        """Pictures of the ``split`` ("val" or "test") epoch that just ended, by name.

        Called on every rank (metrics may synchronise); ``RunMonitor`` logs them from rank 0
        as ``{split}/{name}``. The base task has none.
        """
        return {}

    def on_fit_start(self) -> None:
        for logger in self.loggers:
            logger.log_hyperparams({"num_parameters": self.num_parameters})

    def configure_optimizers(self) -> dict[str, Any]:
        """AdamW, ``warmup_epochs`` of linear warm-up from 1 % of ``lr``, then a cosine decay
        to zero over the remaining steps (no schedule when training is unbounded)."""
        lr, weight_decay = self.hparams.lr, self.hparams.weight_decay
        optimizer = torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)
        total_steps = self.trainer.estimated_stepping_batches
        if math.isinf(total_steps):  # max_epochs=-1: no horizon for a cosine schedule
            return {"optimizer": optimizer}
        warmup_steps = self.hparams.warmup_epochs * total_steps // max(self.trainer.max_epochs, 1)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(total_steps - warmup_steps, 1)
        )
        schedule: torch.optim.lr_scheduler.LRScheduler = cosine
        if warmup_steps > 0:
            warmup = torch.optim.lr_scheduler.LinearLR(
                optimizer, start_factor=0.01, total_iters=warmup_steps
            )
            schedule = torch.optim.lr_scheduler.SequentialLR(
                optimizer, [warmup, cosine], milestones=[warmup_steps]
            )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
