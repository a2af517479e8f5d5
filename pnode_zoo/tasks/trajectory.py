"""Trajectory regression: forecast the observed states of a dynamical system (MSE loss)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from matplotlib.figure import Figure
from pytorch_lightning.callbacks import Callback
from torch import nn
from torchmetrics import MeanAbsoluteError, MeanSquaredError

from pnode_zoo.errors import UserInputError
from pnode_zoo.tasks.base import Task
from pnode_zoo.training.checkpoints import best_and_last
from pnode_zoo.training.panels import FORECAST

__all__ = ["Batch", "TrajectoryRegressor"]

Batch = tuple[torch.Tensor, ...]  # (history, target), or (history, gaps, target) if irregular


class TrajectoryRegressor(Task):
    """Train a registered trajectory model (e.g. ``trajectory_node``) to forecast a series.

    A batch is (history [B, K, D], target [B, W, D]); the model forecasts the target at
    ``times[1:]`` from the history ending at ``times[0]``. Irregularly sampled data add each
    window's gaps between observations, (history, gaps [B, K - 1 + W], target), and its times
    replace ``times`` in the pictures and predictions. Metrics are on the data module's
    standardised scale. Its pictures (``figures``) draw forecasts against the data of the first
    validation or test batch. The best checkpoint is chosen by the lowest validation MSE
    (``checkpoint_metric``).

    Args:
        arch: registered trajectory model, e.g. ``trajectory_node``.
        arch_args: options of that model (``python -m pnode_zoo models NAME`` lists them).
        pretrained: a pretrained name to start from (``python -m pnode_zoo pretrained list``):
            its card's architecture and weights replace ``arch``; ``arch_args`` override the
            card's options (a new head where the number of classes differs).
        input_shape: (history length K, state dimension D) (linked from the data module).
        times: forecast times, the origin first (linked from the data module).
        irregular: the data are irregularly sampled (linked from the data module).
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_epochs: epochs of linear learning-rate warm-up before the cosine decay.
        plot_windows: test windows drawn in the forecast plot.
    """

    checkpoint_metric = ("val/mse", "min")

    def __init__(
        self,
        arch: str = "trajectory_node",
        arch_args: dict[str, Any] | None = None,
        pretrained: str | None = None,
        input_shape: Sequence[int] = (1, 2),
        times: Sequence[float] = (0.0, 1.0),
        irregular: bool = False,
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        warmup_epochs: int = 0,
        plot_windows: int = 4,
    ) -> None:
        self.check_optimiser_options(lr, weight_decay, warmup_epochs)
        super().__init__(arch, arch_args, pretrained, input_shape=tuple(input_shape),
                         times=tuple(times), irregular=irregular)
        self.save_hyperparameters()
        self.metrics = nn.ModuleDict(
            {f"{split}_{name}": metric()
             for split in ("train", "val", "test")
             for name, metric in (("mse", MeanSquaredError), ("mae", MeanAbsoluteError))}
        )
        # per split: the batch's tensors and the forecast of the windows drawn by ``figures``
        self.plotted: dict[str, list[torch.Tensor]] = {}

    def _step(self, batch: Batch, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        *inputs, target = batch
        forecast = self(*inputs)
        loss = nn.functional.mse_loss(forecast, target)
        on_step = split == "train"
        if on_step:
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True,
                     sync_dist=True)
        for name in ("mse", "mae"):
            metric = self.metrics[f"{split}_{name}"]
            metric(forecast, target)
            self.log(f"{split}/{name}", metric, on_step=False, on_epoch=True, prog_bar=True)
        self.log_nfe(split)
        return loss, forecast

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")[0]

    def _evaluate(self, batch: Batch, batch_idx: int, split: str) -> None:
        _, forecast = self._step(batch, split)
        if batch_idx == 0:
            keep = self.hparams.plot_windows
            self.plotted[split] = [t[:keep].detach().cpu() for t in (*batch, forecast)]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._evaluate(batch, batch_idx, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> dict[str, torch.Tensor]:
        *inputs, target = batch
        return {"target": target, "forecast": self(*inputs),
                "times": self.window_times(*batch)[1][:, 1:]}

    def window_times(self, history: torch.Tensor, *rest: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Times from the forecast origin of each window's history [B, K] and of the origin and
        forecast [B, W + 1]: ``times`` for every window, or the window's own if irregular.

        Args:
            history: [B, K, D].
            *rest: (target) or (gaps, target), the rest of a batch.
        """
        if len(rest) < 2:
            times = torch.as_tensor(self.hparams.times)
            past = torch.arange(1 - history.shape[1], 1) * float(times[1] - times[0]) + times[0]
            return past.expand(len(history), -1), times.expand(len(history), -1)
        gaps = rest[0].double().cpu()
        elapsed = torch.cat([torch.zeros(len(gaps), 1, dtype=gaps.dtype), gaps.cumsum(1)], 1)
        elapsed = elapsed - elapsed[:, history.shape[1] - 1 : history.shape[1]]
        return elapsed[:, : history.shape[1]], elapsed[:, history.shape[1] - 1 :]

    def prediction_rows(self, outputs: list[dict[str, torch.Tensor]],
                        datamodule: Any) -> list[dict[str, Any]]:
        """One row per window, forecast step and state component: ``sample`` (the window's
        position in the predicted split), ``step`` (1 .. horizon), ``time`` (from the forecast
        origin), ``component``, ``target`` and ``forecast`` (on the data module's standardised
        scale)."""
        target = torch.cat([o["target"] for o in outputs])
        forecast = torch.cat([o["forecast"] for o in outputs])
        times = torch.cat([o["times"] for o in outputs])
        return [
            {"sample": sample, "step": step + 1, "time": round(float(times[sample, step]), 9),
             "component": component,
             "target": round(float(target[sample, step, component]), 6),
             "forecast": round(float(forecast[sample, step, component]), 6)}
            for sample in range(target.shape[0])
            for step in range(target.shape[1])
            for component in range(target.shape[2])
        ]

    def setup(self, stage: str) -> None:
        data = self.trainer.datamodule
        data_times = getattr(data, "times", None)
        if data_times is not None and tuple(data_times) != tuple(self.hparams.times):
            raise UserInputError(
                f"model.times {tuple(self.hparams.times)} differ from the data module's times "
                f"{tuple(data_times)}; the CLI links data.times to model.init_args.times"
            )
        irregular = getattr(data, "irregular", None)
        if irregular is not None and irregular != self.hparams.irregular:
            raise UserInputError(
                f"model.irregular={self.hparams.irregular} but the data module's series is "
                f"{'ir' if irregular else ''}regular; the CLI links data.irregular to "
                "model.init_args.irregular"
            )

    def figures(self, split: str) -> dict[str, Figure]:
        """Forecasts against the data of the split's first batch."""
        plotted = self.plotted.get(split)
        return {FORECAST: self.forecast_figure(*plotted)} if plotted else {}

    def forecast_figure(self, history: torch.Tensor, *rest: torch.Tensor) -> Figure:
        """One panel per window: history (squares), observed future (dots) and forecast (line)
        of every component.

        Args:
            history: [B, K, D].
            *rest: (target, forecast), or (gaps, target, forecast) for irregular data.
        """
        *batch_rest, forecast = rest
        target = batch_rest[-1]
        # numpy arrays: matplotlib's conversion of a tensor is deprecated by numpy 2
        past, future, history, target, forecast = (
            t.detach().cpu().numpy()
            for t in (*self.window_times(history, *batch_rest), history, target, forecast))
        figure = Figure(figsize=(4 * len(history), 3), layout="constrained")
        axes = figure.subplots(1, len(history), squeeze=False)[0]
        for k, axis in enumerate(axes):
            times = future[k]
            for d in range(history.shape[-1]):
                color = f"C{d}"
                axis.plot(past[k], history[k, :, d], "s-", color=color, alpha=0.4, markersize=3)
                axis.plot(times[1:], target[k, :, d], "o", color=color, markersize=3)
                axis.plot(times[1:], forecast[k, :, d], "-", color=color, label=f"x{d}")
            axis.axvline(float(times[0]), color="grey", linewidth=0.5)
            axis.set(title=f"window {k}", xlabel="time from forecast origin")
        axes[0].legend(fontsize="small")
        figure.suptitle("squares: input, dots: observed, lines: forecast", fontsize="small")
        return figure

    def configure_callbacks(self) -> list[Callback]:
        """Where the trainer has only Lightning's default checkpointing (unmonitored, unnamed),
        keep the best checkpoint by validation MSE instead (the CLI sets this up itself)."""
        callbacks = self.trainer.checkpoint_callbacks
        default = (len(callbacks) == 1 and callbacks[0].monitor is None
                   and callbacks[0].filename is None and callbacks[0].save_last is None)
        return [best_and_last(*self.checkpoint_metric)] if default else []
