"""Pictures of a run: drawn with matplotlib, written as PNGs to the run directory and sent to the
loggers that take pictures (W&B as images, TensorBoard as figures).

Figures are ``matplotlib.figure.Figure`` objects built without pyplot, so no global state or
display backend is involved.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from matplotlib.figure import Figure
from pytorch_lightning.loggers import TensorBoardLogger, WandbLogger

__all__ = [
    "TIMELINE_COLORS",
    "confusion_figure",
    "log_figure",
    "residual_figure",
    "run_directory",
    "timeline_figure",
]

TIMELINE_COLORS = {"fine": "C0", "coarse": "C1", "comm": "C2", "wait": "C3"}


def run_directory(trainer: pl.Trainer) -> Path:
    """The run's directory: the checkpoint folder's parent, else the trainer's log dir."""
    checkpoint = trainer.checkpoint_callback
    if checkpoint is not None and checkpoint.dirpath:
        return Path(checkpoint.dirpath).parent
    return Path(trainer.log_dir or trainer.default_root_dir)


def log_figure(trainer: pl.Trainer, key: str, figure: Figure, epoch: int | None = None) -> Path:
    """Write ``figure`` to ``<run dir>/plots/<key>[_epochNNN].png`` and log it under ``key``.

    Call on global rank 0 only.

    Args:
        trainer: the running trainer (run directory, loggers, step).
        key: the logged name, e.g. ``val/confusion_matrix``.
        figure: the picture.
        epoch: the epoch it shows, added to the file name (None: no suffix).
    """
    suffix = "" if epoch is None else f"_epoch{epoch:03d}"
    path = run_directory(trainer) / "plots" / f"{key.replace('/', '_')}{suffix}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            logger.log_image(key=key, images=[str(path)], step=trainer.global_step)
        elif isinstance(logger, TensorBoardLogger):
            logger.experiment.add_figure(key, figure, global_step=trainer.global_step, close=False)
    return path


def residual_figure(
    curves: Sequence[tuple[int, list[float], list[float]]], tol: float | None
) -> Figure:
    """Residual against parareal iteration, one line per epoch (forward, and adjoint if any).

    Args:
        curves: (epoch, forward residual per iteration, backward residual per iteration).
        tol: the forward stopping tolerance, drawn as a dashed line (None or 0: not drawn).
    """
    backward = any(b for _, _, b in curves)
    figure = Figure(figsize=(9 if backward else 5, 3.6), layout="constrained")
    axes = figure.subplots(1, 2 if backward else 1, squeeze=False)[0]
    colors = _epoch_colors(len(curves))
    for (epoch, forward, adjoint), color in zip(curves, colors, strict=True):
        for axis, values in zip(axes, (forward, adjoint), strict=False):
            if values:
                axis.semilogy(range(1, len(values) + 1), values, "o-", color=color,
                              markersize=3, label=f"epoch {epoch}")
    for axis, what in zip(axes, ("forward", "adjoint (backward)"), strict=False):
        axis.set(xlabel="parareal iteration k", ylabel="largest relative change", title=what)
        axis.xaxis.get_major_locator().set_params(integer=True)
    if tol:
        axes[0].axhline(tol, color="grey", linestyle="--", linewidth=1, label=f"tol {tol:g}")
    if len(curves) <= 12:
        axes[0].legend(fontsize="small")
    figure.suptitle("residual after each iteration: median over the epoch's training steps",
                    fontsize="small")
    return figure


def _epoch_colors(count: int) -> list[tuple[float, ...]]:
    from matplotlib import colormaps

    return [colormaps["viridis"](x) for x in np.linspace(0.0, 0.9, max(count, 1))][:count]


def confusion_figure(matrix: torch.Tensor, title: str) -> Figure:
    """A confusion matrix (rows: true class, columns: predicted), shaded by row share.

    Args:
        matrix: counts [C, C].
        title: the figure's title.
    """
    counts = matrix.detach().cpu().to(torch.int64)
    share = counts / counts.sum(dim=1, keepdim=True).clamp_min(1)
    size = min(2.5 + 0.45 * len(counts), 12)
    figure = Figure(figsize=(size, size), layout="constrained")
    axis = figure.subplots()
    axis.imshow(share.numpy(), cmap="Blues", vmin=0.0, vmax=1.0)  # a tensor: numpy 2 warns
    if len(counts) <= 20:
        for (row, col), value in np.ndenumerate(counts.numpy()):
            if value:
                axis.text(col, row, str(value), ha="center", va="center", fontsize="small",
                          color="white" if share[row, col] > 0.5 else "black")
    axis.set(xlabel="predicted class", ylabel="true class",
             title=f"{title}: {int(counts.trace())} of {int(counts.sum())} right")
    ticks = range(len(counts))
    axis.set_xticks(ticks)
    axis.set_yticks(ticks)
    return figure


def timeline_figure(timelines: Sequence[Sequence[tuple[str, float, float]]], title: str) -> Figure:
    """One lane per rank: when each fine solve, coarse step, send/collective and blocked receive
    of one step ran, in milliseconds from the step's first event.

    Args:
        timelines: per rank, (what, start, stop) in seconds of one clock shared by the ranks.
        title: the figure's title.
    """
    starts = [start for timeline in timelines for _, start, _ in timeline]
    origin = min(starts) if starts else 0.0
    figure = Figure(figsize=(10, 1.6 + 0.6 * len(timelines)), layout="constrained")
    axis = figure.subplots()
    labelled: set[str] = set()
    for rank, timeline in enumerate(timelines):
        for what, color in TIMELINE_COLORS.items():
            spans = [(1e3 * (start - origin), 1e3 * (stop - start))
                     for kind, start, stop in timeline if kind == what]
            if spans:
                axis.broken_barh(spans, (rank - 0.4, 0.8), facecolors=color,
                                 label=None if what in labelled else what)
                labelled.add(what)
    axis.set_yticks(range(len(timelines)), [f"rank {r}" for r in range(len(timelines))])
    axis.invert_yaxis()
    axis.set(xlabel="milliseconds from the step's first event", title=title)
    figure.legend(loc="outside lower center", fontsize="small", ncols=len(labelled))
    return figure
