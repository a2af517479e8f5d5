"""The keys a pnode_zoo run logs, section by section, and the dashboard panels that show them.

One list (``SECTIONS``) serves both sides: ``RunMonitor`` logs under the constants defined here,
and ``python -m pnode_zoo dashboard`` builds one W&B panel per ``Panel``. Split metrics
(``train/loss_step``, ``val/acc``, ...) are logged by the tasks under the names written here.
A key with ``{rank}`` stands for one key per rank; its panel matches them by a pattern.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = [
    "BACKWARD_ITERS",
    "BACKWARD_RESIDUAL",
    "CACHE_HIT_RATE",
    "CONFUSION_MATRIX",
    "CONVERGED",
    "EPOCH_CACHE_HIT_RATE",
    "EPOCH_TIME",
    "FORECAST",
    "FORWARD_ITERS",
    "FORWARD_ITERS_MEDIAN",
    "FORWARD_RESIDUAL",
    "Kind",
    "LEARNING_RATE",
    "LINEAR_SOLVES",
    "MISSED_TOL",
    "MODELLED_SPEEDUP",
    "NEWTON_ITERS",
    "NFE",
    "NFE_COARSE",
    "NFE_CRITICAL_PATH",
    "NFE_FINE",
    "NUM_PARAMETERS",
    "Panel",
    "RANK_TIMER",
    "RANK_TIMERS",
    "RESIDUALS",
    "RESIDUALS_PLOT",
    "SAMPLES_PER_SECOND",
    "SECTIONS",
    "SPEEDUP_VS_ESTIMATED_SERIAL",
    "TEST_MISSED_TOL",
    "TIMELINE",
    "VAL_MISSED_TOL",
]

# parareal/: every call of a parareal block; step-level values at the logging interval ...
FORWARD_ITERS = "parareal/forward_iters"
BACKWARD_ITERS = "parareal/backward_iters"
FORWARD_RESIDUAL = "parareal/forward_residual"
BACKWARD_RESIDUAL = "parareal/backward_residual"
CONVERGED = "parareal/converged"
CACHE_HIT_RATE = "parareal/cache_hit_rate"  # warm-start cache (NeuralCDEBlock): hits / look-ups
# ... and means per call over each training epoch (f evaluations summed over a time group's
# ranks; the critical path is the forward's, in units of one f on one slice's batch)
NFE = "parareal/nfe"
NFE_FINE = "parareal/nfe_fine"
NFE_COARSE = "parareal/nfe_coarse"
NFE_CRITICAL_PATH = "parareal/nfe_critical_path"
NEWTON_ITERS = "parareal/newton_iters"
LINEAR_SOLVES = "parareal/linear_solves"
MISSED_TOL = "parareal/missed_tol"  # calls per epoch that max_iters stopped short of tol
VAL_MISSED_TOL = "parareal/val_missed_tol"
TEST_MISSED_TOL = "parareal/test_missed_tol"
FORWARD_ITERS_MEDIAN = "parareal/epoch_forward_iters_median"  # K over rank 0's training calls
EPOCH_CACHE_HIT_RATE = "parareal/epoch_cache_hit_rate"
RESIDUALS = "parareal/residuals"  # table: one row per iteration, per epoch
RESIDUALS_PLOT = "parareal/residuals_plot"  # picture: residual against iteration per epoch

# time_parallel/: per-rank seconds per training step, as epoch means, and the speed-ups
RANK_TIMERS = ("time_fine", "time_coarse", "time_comm", "time_wait")
RANK_TIMER = "time_parallel/rank{rank}/{timer}"
# the serial fine solve estimated (its f evaluations at the measured seconds per evaluation)
# over the measured forward: only the denominator is measured
SPEEDUP_VS_ESTIMATED_SERIAL = "time_parallel/speedup_vs_estimated_serial"
MODELLED_SPEEDUP = "time_parallel/modelled_speedup"
TIMELINE = "time_parallel/timeline"  # picture: one training step, per rank

# system/
LEARNING_RATE = "system/lr"
EPOCH_TIME = "system/epoch_time"
SAMPLES_PER_SECOND = "system/samples_per_second"
NUM_PARAMETERS = "system/num_parameters"

# pictures of a split, from ``Task.figures``: "{split}/{name}"
CONFUSION_MATRIX = "confusion_matrix"
FORECAST = "forecast"

Kind = Literal["line", "scalar", "image", "table"]


@dataclass(frozen=True)
class Panel:
    """One dashboard panel.

    Attributes:
        title: the panel's title.
        keys: the logged keys it shows (a key with ``{rank}``/``{timer}`` fields is a pattern).
        kind: ``line`` (against the step), ``scalar`` (the latest value), ``image`` or ``table``.
        log_y: logarithmic y axis (line plots).
    """

    title: str
    keys: tuple[str, ...]
    kind: Kind = "line"
    log_y: bool = False

    def patterns(self) -> list[re.Pattern[str]]:
        """One regular expression per key: ``{field}`` placeholders match any path segment."""
        return [re.compile(re.sub(r"\\\{(\w+)\\\}", r"[^/]+", re.escape(key))) for key in self.keys]


def _rank_timer(timer: str) -> str:
    return RANK_TIMER.format(rank="{rank}", timer=timer)


SECTIONS: dict[str, tuple[Panel, ...]] = {
    "train": (
        Panel("training loss", ("train/loss_step",)),
        Panel("training accuracy", ("train/acc",)),
        Panel("training MSE", ("train/mse",)),
        Panel("f evaluations per forward", ("train/nfe_step",)),
    ),
    "val": (
        Panel("validation loss", ("val/loss",)),
        Panel("validation accuracy", ("val/acc",)),
        Panel("validation MSE and MAE", ("val/mse", "val/mae")),
        Panel("validation confusion matrix", (f"val/{CONFUSION_MATRIX}",), "image"),
        Panel("validation forecasts", (f"val/{FORECAST}",), "image"),
    ),
    "test": (
        Panel("test accuracy", ("test/acc",), "scalar"),
        Panel("test MSE", ("test/mse",), "scalar"),
        Panel("test confusion matrix", (f"test/{CONFUSION_MATRIX}",), "image"),
        Panel("test forecasts", (f"test/{FORECAST}",), "image"),
    ),
    "parareal": (
        Panel("residual against iteration, per epoch", (RESIDUALS_PLOT,), "image"),
        Panel("residual per iteration (table)", (RESIDUALS,), "table"),
        Panel("parareal iterations", (FORWARD_ITERS, BACKWARD_ITERS, FORWARD_ITERS_MEDIAN)),
        Panel("warm-start cache hit rate", (CACHE_HIT_RATE, EPOCH_CACHE_HIT_RATE)),
        Panel("final residual", (FORWARD_RESIDUAL, BACKWARD_RESIDUAL), log_y=True),
        Panel("tolerance met (1) or missed (0)", (CONVERGED,)),
        Panel("calls that missed the tolerance, per epoch",
              (MISSED_TOL, VAL_MISSED_TOL, TEST_MISSED_TOL)),
        Panel("f evaluations per call", (NFE, NFE_FINE, NFE_COARSE, NFE_CRITICAL_PATH)),
        Panel("Newton iterations and linear solves per call", (NEWTON_ITERS, LINEAR_SOLVES)),
    ),
    "time_parallel": (
        Panel("timeline of one step", (TIMELINE,), "image"),
        Panel("speed-up of the forward: over the estimated serial solve, and modelled",
              (SPEEDUP_VS_ESTIMATED_SERIAL, MODELLED_SPEEDUP)),
        *(Panel(f"{timer[5:]} seconds per step, per rank", (_rank_timer(timer),))
          for timer in RANK_TIMERS),
    ),
    "system": (
        Panel("learning rate", (LEARNING_RATE,)),
        Panel("training epoch seconds", (EPOCH_TIME,)),
        Panel("training samples per second", (SAMPLES_PER_SECOND,)),
        Panel("trainable parameters", (NUM_PARAMETERS,), "scalar"),
    ),
}
