"""``RunMonitor``: what a run reports beyond its loss, under the keys of ``panels``.

- ``system/``: learning rate (at the logging interval), training epoch seconds, samples per
  second, trainable parameters.
- ``parareal/`` (models with a ``PararealODEBlock``): iterations, final residuals and whether
  the tolerance was met, at the logging interval from the last call; per training epoch, means
  per call of f evaluations (total and on the forward's critical path), Newton iterations and
  linear solves, how many calls ``max_iters`` stopped short of ``tol`` (also said in one line
  per epoch), the median K of rank 0's calls, and the residual after each iteration as a table
  and a picture. Blocks with a warm-start cache (``NeuralCDEBlock``): its hit rate per step and
  per epoch.
- ``time_parallel/`` (under ``TimeParallelStrategy``): every rank's fine, coarse,
  communication and wait seconds per step, the forward's speed-up over an estimated serial
  solve and the modelled one, and a picture of one step's timeline on every rank.
- pictures of the task (``Task.figures``: confusion matrix, forecasts) after validation and
  test.

Cost: the per-step work is reading the blocks' counters into Python numbers; ranks exchange
their numbers once per epoch (one small all-gather) and, in an epoch that draws pictures under a
time group, their timelines. Only global rank 0 logs, so one W&B run holds every rank's timings.
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.data import extract_batch_size

from pnode_zoo.errors import UserInputError
from pnode_zoo.ode import PararealODEBlock, PararealStats
from pnode_zoo.ode.stats import time_group_critical_path
from pnode_zoo.training import panels
from pnode_zoo.training.figures import log_figure, residual_figure, timeline_figure

__all__ = ["FIELDS", "RunMonitor"]

log = logging.getLogger(__name__)

# Per-rank sums over a training epoch's block calls, exchanged once per epoch.
FIELDS = (
    "calls", "forward_iters", "backward_iters", "nfe_fine", "nfe_coarse", "newton_iters",
    "linear_solves", "time_fine", "time_coarse", "time_comm", "time_wait",
    "forward_seconds",       # wall time of the block's forward
    "forward_fine_seconds",  # inside the fine propagator during the forward
    "forward_units",         # f units this rank spent in the forward (cost model, P = 1)
    "forward_sequential",    # of which the coarse sweep's
    "serial_units",          # f units of the serial fine solve (cost model)
    "missed", "val_calls", "val_missed",
    "cache_hits", "cache_lookups",  # of warm-start caches (NeuralCDEBlock)
)


class RunMonitor(pl.Callback):
    """Log system numbers, parareal and time-parallel diagnostics and pictures (see module doc).

    Args:
        plot_every_n_epochs: draw the pictures of every n-th epoch (residual curves, timeline,
            validation confusion matrix or forecasts); 0: only at test. Each picture goes to
            ``<run dir>/plots/`` as a PNG and to the loggers that take pictures.
    """

    def __init__(self, plot_every_n_epochs: int = 1) -> None:
        if not isinstance(plot_every_n_epochs, int) or plot_every_n_epochs < 0:
            raise UserInputError(f"plot_every_n_epochs must be an integer >= 0, got "
                             f"{plot_every_n_epochs!r}")
        self.plot_every_n_epochs = plot_every_n_epochs
        self._trainer: pl.Trainer | None = None
        self._blocks: list[PararealODEBlock] = []
        self._hooks: list[Any] = []
        self._started: dict[int, float] = {}
        self._forward: dict[int, tuple[PararealStats, float, float]] = {}
        self._last: list[PararealStats] = []
        self._cache_before: dict[int, tuple[int, int]] = {}
        self._step_cache = [0, 0]  # hits, look-ups of the training step's calls
        self._reset_epoch()
        self._test = [0, 0]
        self._lr: float | None = None
        self._limits: dict[str, tuple[int | None, float]] = {}  # max_iters and tol per stage
        self._curves: list[tuple[int, list[float], list[float]]] = []

    # --- set-up -----------------------------------------------------------------------------

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        self._trainer = trainer
        self._blocks = [m for m in pl_module.modules() if isinstance(m, PararealODEBlock)]
        for index, block in enumerate(self._blocks):
            self._hooks.append(block.register_forward_pre_hook(self._make_pre_hook(index)))
            self._hooks.append(block.register_forward_hook(self._make_post_hook(index)))
        if trainer.is_global_zero and self._blocks:
            options = [block.options.as_dict() for block in self._blocks]
            for logger in trainer.loggers:
                logger.log_hyperparams({"parareal": options[0] if len(options) == 1 else options})

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks.clear()

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        count = sum(p.numel() for p in pl_module.parameters() if p.requires_grad)
        self._log(trainer, {panels.NUM_PARAMETERS: float(count)})

    # --- every call of a block --------------------------------------------------------------

    def _make_pre_hook(self, index: int):
        def pre_hook(block: PararealODEBlock, args: Any) -> None:
            self._started[index] = time.perf_counter()
            cache = getattr(block, "cache", None)
            if cache is not None:
                self._cache_before[index] = (cache.hits, cache.lookups)
        return pre_hook

    def _make_post_hook(self, index: int):
        def post_hook(block: PararealODEBlock, args: Any, output: Any) -> None:
            trainer, stats = self._trainer, block.stats
            if trainer is None or stats is None or trainer.sanity_checking:
                return
            stage = ("train" if trainer.training else "val" if trainer.validating
                     else "test" if trainer.testing else None)
            if stage is None:  # predicting
                return
            self._limits[stage] = (block.options.max_iters, stats.tol)
            missed = int(not stats.converged and stats.tol > 0)
            if stage == "train":
                seconds = time.perf_counter() - self._started.pop(index, time.perf_counter())
                self._forward[index] = (stats, seconds, stats.time_fine)
                self._sums["missed"] += missed
                if index in self._cache_before:
                    hits, lookups = self._cache_before.pop(index)
                    self._step_cache[0] += block.cache.hits - hits
                    self._step_cache[1] += block.cache.lookups - lookups
            elif stage == "val":
                self._sums["val_calls"] += 1
                self._sums["val_missed"] += missed
            else:
                self._test[0] += 1
                self._test[1] += missed
        return post_hook

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._reset_epoch()

    def _reset_epoch(self) -> None:
        self._sums = dict.fromkeys(FIELDS, 0.0)
        self._residuals: tuple[list[list[float]], list[list[float]]] = ([], [])
        self._epoch_start = time.perf_counter()
        self._epoch_stop = self._epoch_start
        self._samples = 0
        self._iterations: list[int] = []  # K of every training call, this rank

    def on_train_batch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                             batch: Any, batch_idx: int) -> None:
        self._lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else None

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           outputs: Any, batch: Any, batch_idx: int) -> None:
        self._epoch_stop = time.perf_counter()
        self._samples += extract_batch_size(batch)
        calls = [self._forward.pop(index) for index in sorted(self._forward)]
        if calls:
            self._last = [stats for stats, *_ in calls]
        for stats, seconds, fine_seconds in calls:
            self._add(stats, seconds, fine_seconds)
        every = trainer.log_every_n_steps
        if every and trainer.global_step % every == 0 and trainer.is_global_zero:
            metrics = {} if self._lr is None else {panels.LEARNING_RATE: self._lr}
            if calls:
                metrics.update(self._step_metrics(self._last))
            if self._step_cache[1]:
                metrics[panels.CACHE_HIT_RATE] = self._step_cache[0] / self._step_cache[1]
            self._log(trainer, metrics)
        self._sums["cache_hits"] += self._step_cache[0]
        self._sums["cache_lookups"] += self._step_cache[1]
        self._step_cache = [0, 0]

    def _add(self, stats: PararealStats, seconds: float, fine_seconds: float) -> None:
        """Add one training call (forward and backward done) to the epoch's sums."""
        sums = self._sums
        for name in FIELDS[1:11]:
            sums[name] += getattr(stats, name)
        sums["calls"] += 1
        self._iterations.append(stats.forward_iters)
        sums["forward_seconds"] += seconds
        sums["forward_fine_seconds"] += fine_seconds
        sums["forward_units"] += stats.critical_path_nfe(1, "forward")
        sums["forward_sequential"] += stats.sequential_nfe("forward")
        serial = stats.serial_fine_nfe()
        sums["serial_units"] += 0.0 if math.isnan(serial) else serial
        for per_iteration, values in zip(
            self._residuals, (stats.forward_residuals, stats.backward_residuals), strict=True
        ):
            for k, value in enumerate(values):
                if k == len(per_iteration):
                    per_iteration.append([])
                per_iteration[k].append(value)

    @staticmethod
    def _step_metrics(last: list[PararealStats]) -> dict[str, float]:
        """The last step's calls: most iterations, largest final residual, all converged."""
        metrics = {
            panels.FORWARD_ITERS: max(s.forward_iters for s in last),
            panels.BACKWARD_ITERS: max(s.backward_iters for s in last),
            panels.CONVERGED: float(all(s.converged for s in last)),
        }
        for key, name in ((panels.FORWARD_RESIDUAL, "forward_residuals"),
                          (panels.BACKWARD_RESIDUAL, "backward_residuals")):
            finals = [getattr(s, name)[-1] for s in last if getattr(s, name)]
            if finals:
                metrics[key] = max(finals)
        return metrics

    def epoch_iterations(self) -> tuple[list[int], float | None]:
        """This rank's training calls of the epoch so far: the forward K of each, and the
        warm-start caches' hit rate over them (None: no look-up)."""
        lookups = self._sums["cache_lookups"]
        return list(self._iterations), (self._sums["cache_hits"] / lookups if lookups else None)

    # --- the end of an epoch ----------------------------------------------------------------

    def _plots_now(self, trainer: pl.Trainer) -> bool:
        every = self.plot_every_n_epochs
        return bool(every) and (trainer.current_epoch + 1) % every == 0

    def _time_ranks(self) -> int:
        """Ranks of the blocks' time group (1 in one process or without a call yet)."""
        stats = self._blocks[0].stats if self._blocks else None
        return stats.ranks if stats is not None else 1

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        seconds = self._epoch_stop - self._epoch_start
        ranks = self._time_ranks()
        data_groups = max(trainer.world_size // ranks, 1)
        metrics = {panels.EPOCH_TIME: seconds}
        if seconds > 0:
            metrics[panels.SAMPLES_PER_SECOND] = self._samples * data_groups / seconds
        timelines = None
        if self._blocks and self._sums["calls"]:  # the same on every rank: collectives agree
            vector = torch.tensor([self._sums[f] for f in FIELDS], dtype=torch.float64)
            rows = trainer.strategy.all_gather(vector.to(pl_module.device)).reshape(-1, len(FIELDS))
            metrics.update(self._epoch_metrics(rows.cpu(), ranks))
            metrics[panels.FORWARD_ITERS_MEDIAN] = statistics.median(self._iterations)
            if ranks > 1 and self._plots_now(trainer):
                timelines = self._gather_timelines(trainer)
        if not trainer.is_global_zero:
            return
        self._log(trainer, metrics)
        if self._blocks and self._sums["calls"]:
            self._report_missed(trainer, metrics)
            self._log_residuals(trainer)
        if timelines and any(timelines):
            figure = timeline_figure(
                timelines, f"time_parallel: last training step of epoch {trainer.current_epoch}")
            log_figure(trainer, panels.TIMELINE, figure, trainer.current_epoch)

    def _epoch_metrics(self, rows: torch.Tensor, ranks: int) -> dict[str, float]:
        """Parareal and time-parallel numbers of the epoch from every rank's sums.

        Rows are global ranks; ranks r = d * P + t form data group d's time group. Counts of f
        are summed over a time group and averaged over data groups; the forward's critical path
        is ``stats.time_group_critical_path`` of the ranks' records.
        """
        column = {name: rows[:, i] for i, name in enumerate(FIELDS)}
        data_groups = rows.shape[0] // ranks
        calls = float(rows[0, FIELDS.index("calls")])

        def per_call(name: str) -> float:
            return float(column[name].sum()) / data_groups / calls

        metrics = {
            panels.NFE: per_call("nfe_fine") + per_call("nfe_coarse"),
            panels.NFE_FINE: per_call("nfe_fine"),
            panels.NFE_COARSE: per_call("nfe_coarse"),
            panels.NEWTON_ITERS: per_call("newton_iters"),
            panels.LINEAR_SOLVES: per_call("linear_solves"),
            panels.MISSED_TOL: float(column["missed"].sum()) / ranks,
            panels.VAL_MISSED_TOL: float(column["val_missed"].sum()) / ranks,
        }
        lookups = float(column["cache_lookups"].sum())
        if lookups:
            metrics[panels.EPOCH_CACHE_HIT_RATE] = float(column["cache_hits"].sum()) / lookups
        group = {name: values[:ranks] for name, values in column.items()}
        fine_units = group["forward_units"] - group["forward_sequential"]
        critical_path = time_group_critical_path(group["forward_sequential"].tolist(),
                                                 fine_units.tolist())
        metrics[panels.NFE_CRITICAL_PATH] = critical_path / calls
        if ranks > 1:
            for rank, row in enumerate(rows):
                for timer in panels.RANK_TIMERS:
                    key = panels.RANK_TIMER.format(rank=rank, timer=timer)
                    metrics[key] = float(row[FIELDS.index(timer)]) / calls
            serial = float(group["serial_units"][0])
            if serial > 0 and float(fine_units.sum()) > 0:
                seconds_per_unit = float(group["forward_fine_seconds"].sum() / fine_units.sum())
                metrics[panels.MODELLED_SPEEDUP] = serial / critical_path
                metrics[panels.SPEEDUP_VS_ESTIMATED_SERIAL] = (
                    serial * seconds_per_unit / float(group["forward_seconds"].max()))
        return metrics

    def _gather_timelines(self, trainer: pl.Trainer) -> list[list[tuple[str, float, float]]]:
        """Every rank's timeline of its last training step, on the wall clock (a collective)."""
        offset = time.time() - time.perf_counter()
        mine = [(what, start + offset, stop + offset)
                for stats in self._last for what, start, stop in stats.timeline]
        if trainer.world_size == 1:
            return [mine]
        gathered: list[Any] = [None] * trainer.world_size
        torch.distributed.all_gather_object(gathered, mine)
        return gathered

    def _report_missed(self, trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        """One line per epoch when ``max_iters`` stopped calls short of the tolerance."""
        missed, val_missed = metrics[panels.MISSED_TOL], metrics[panels.VAL_MISSED_TOL]
        if not (missed or val_missed):
            return
        data_groups = trainer.world_size // self._time_ranks()
        self._say_missed(
            f"in epoch {trainer.current_epoch}, {missed:.0f} of "
            f"{self._sums['calls'] * data_groups:.0f} training and {val_missed:.0f} of "
            f"{self._sums['val_calls'] * data_groups:.0f} validation forward calls",
            panels.MISSED_TOL, "train" if missed else "val")

    def _say_missed(self, calls: str, key: str, stage: str) -> None:
        max_iters, tol = self._limits[stage]
        log.warning("parareal: %s stopped at max_iters=%s with the residual above tol=%g "
                    "(logged as %s); raise max_iters or tol", calls, max_iters, tol, key)

    def _log_residuals(self, trainer: pl.Trainer) -> None:
        """Median residual after each iteration over the epoch's calls: a table and a picture."""
        forward, backward = ([statistics.median(v) for v in per_iteration]
                             for per_iteration in self._residuals)
        epoch = trainer.current_epoch
        self._curves.append((epoch, forward, backward))
        rows = [[epoch, k + 1, _at(forward, k), _at(backward, k)]
                for k in range(max(len(forward), len(backward)))]
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger) and rows:
                logger.log_table(panels.RESIDUALS, columns=[
                    "epoch", "iteration", "forward_residual", "backward_residual"],
                    data=rows, step=trainer.global_step)
        if self._plots_now(trainer) and rows:
            figure = residual_figure(self._curves, self._limits["train"][1])
            log_figure(trainer, panels.RESIDUALS_PLOT, figure, epoch)

    def on_validation_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not trainer.sanity_checking and self._plots_now(trainer):
            self._log_task_figures(trainer, pl_module, "val", trainer.current_epoch)

    def on_test_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._test = [0, 0]

    def on_test_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._log_task_figures(trainer, pl_module, "test", None)
        if not self._blocks:
            return
        counts = torch.tensor(self._test, dtype=torch.float64, device=pl_module.device)
        calls, missed = (trainer.strategy.all_gather(counts).reshape(-1, 2).sum(dim=0)
                         / self._time_ranks()).tolist()
        if trainer.is_global_zero:
            self._log(trainer, {panels.TEST_MISSED_TOL: missed})
            if missed:
                self._say_missed(f"{missed:.0f} of {calls:.0f} test forward calls",
                                 panels.TEST_MISSED_TOL, "test")

    def _log_task_figures(self, trainer: pl.Trainer, pl_module: pl.LightningModule, split: str,
                          epoch: int | None) -> None:
        """The task's pictures of ``split`` (built on every rank: metrics may synchronise)."""
        figures = getattr(pl_module, "figures", None)
        for name, figure in (figures(split) if figures else {}).items():
            if trainer.is_global_zero:
                log_figure(trainer, f"{split}/{name}", figure, epoch)

    @staticmethod
    def _log(trainer: pl.Trainer, metrics: dict[str, float]) -> None:
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.log_metrics({**metrics, "epoch": trainer.current_epoch},
                                   step=trainer.global_step)


def _at(values: list[float], k: int) -> float | None:
    return values[k] if k < len(values) else None
