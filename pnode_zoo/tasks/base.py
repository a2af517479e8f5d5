"""What every task shares: the network from the registry, parameter count, NFE logging, and the
optimiser (AdamW with linear warm-up and a cosine decay per step)."""

from __future__ import annotations

import math
from typing import Any

import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from torch import nn

from pnode_zoo.models import create_model


class Task(pl.LightningModule):
    """Base of the tasks: builds ``self.net`` with ``create_model`` and configures AdamW.

    Subclasses save their hyperparameters, which must include ``lr``, ``weight_decay`` and
    ``warmup_epochs``.

    Args:
        arch: registered model name.
        arch_args: options of that model.
        **model_kwargs: the data-dependent options the CLI links from the data module.
    """

    def __init__(self, arch: str, arch_args: dict[str, Any] | None, **model_kwargs: Any) -> None:
        super().__init__()
        self.net: nn.Module = create_model(arch, **model_kwargs, **(arch_args or {}))

    @property
    def num_parameters(self) -> int:
        """Trainable parameters of the network."""
        return sum(p.numel() for p in self.net.parameters() if p.requires_grad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def log_nfe(self, split: str) -> None:
        """Log the network's evaluations of f in the last forward (ODE models only)."""
        nfe = getattr(self.net, "nfe", None)
        if nfe is not None:
            self.log(f"{split}/nfe", float(nfe), on_step=split == "train", on_epoch=True)

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
