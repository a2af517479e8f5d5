"""Trajectory data: one observed series of a dynamical system, framed as forecasting.

The series x_0, x_1, ... is observed on a uniform grid with spacing ``dt``. A sample is a
window: the ``history`` observations up to the forecast origin (input [history, D]) and the
next ``horizon`` observations (target [horizon, D]), so every target lies on the grid
``times = (0, dt, ..., horizon * dt)`` relative to the origin. A parareal block with
``horizon`` slices over [0, horizon * dt] ending each slice on an observation reproduces
exactly these points.

An irregularly sampled series (``gaps``: the time from each observation to the next) gives
every window its own times instead: a sample is then (history, gaps [history - 1 + horizon],
target), the gaps between the window's consecutive observations, and ``times`` is only the
nominal grid that fixes the number of forecast intervals.

Splits are ranges of time, in order: the last ``test_windows * horizon`` observations are the
test range, the ``val_windows * horizon`` before them the validation range, everything earlier
the training range. Training windows lie wholly in the training range (stride 1); validation
and test windows tile their range (stride ``horizon``), each forecasting from the
observations before it. The series is standardised with training-range statistics.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
from scipy.integrate import solve_ivp
from torch.utils.data import Dataset, TensorDataset

from pnode_zoo.data.base import TensorDataModule
from pnode_zoo.errors import UserInputError

__all__ = [
    "ForecastDataModule",
    "LotkaVolterraDataModule",
    "TrajectoryDataModule",
    "lotka_volterra",
]


class TrajectoryDataModule(TensorDataModule):
    """Forecasting windows of one series ``self.series`` [T, D] (set by the subclass).

    Exposes ``input_shape = (history, D)`` and ``times`` (the forecast's time grid, starting
    at the origin 0), which the trajectory task passes to its model.

    Args:
        history: observations given as input (the last one is the forecast origin).
        horizon: observations to forecast per window.
        dt: time between two observations (the model's time unit).
        val_windows: forecast windows in the validation range.
        test_windows: forecast windows in the test range.
        batch_size: windows per batch.
        seed: seed of the shuffle order.
    """

    series: np.ndarray  # [T, D], raw units
    gaps: np.ndarray | None = None  # [T - 1], time from each observation to the next; None: dt

    def __init__(
        self,
        history: int = 1,
        horizon: int = 10,
        dt: float = 0.1,
        val_windows: int = 1,
        test_windows: int = 1,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, num_workers)
        if history < 1 or horizon < 1 or val_windows < 1 or test_windows < 1 or dt <= 0:
            raise UserInputError(
                "data.history, data.horizon, data.val_windows and data.test_windows must be at "
                f"least 1 and data.dt positive, got {history}, {horizon}, {val_windows}, "
                f"{test_windows}, {dt}"
            )
        self.history, self.horizon, self.dt = history, horizon, dt
        self.val_windows, self.test_windows = val_windows, test_windows
        self.times = tuple(round(k * dt, 12) for k in range(horizon + 1))

    @property
    def irregular(self) -> bool:
        """Whether the observations are irregularly spaced: samples then carry their gaps."""
        return self.gaps is not None

    def set_series(self, series: np.ndarray, gaps: np.ndarray | None = None) -> None:
        """Set the observed series [T, D] (taken ``gaps`` [T - 1] apart, None: every ``dt``)
        and ``input_shape``; check a training window fits."""
        self.series, self.gaps = series, gaps
        self.input_shape = (self.history, series.shape[1])
        if self.ranges()["train"].stop < self.history + self.horizon:
            raise UserInputError(
                f"data: a series of {len(self.series)} observations leaves no training window "
                f"of history {self.history} + horizon {self.horizon} before "
                f"{self.val_windows} + {self.test_windows} held-out windows"
            )

    def ranges(self) -> dict[str, range]:
        """Observation indices of the train, val and test time ranges."""
        end = len(self.series)
        test_start = end - self.test_windows * self.horizon
        val_start = test_start - self.val_windows * self.horizon
        return {"train": range(0, val_start), "val": range(val_start, test_start),
                "test": range(test_start, end)}

    def origins(self, split: str) -> np.ndarray:
        """Index of the forecast origin (last input observation) of each window of a split."""
        span = self.ranges()[split]
        if split == "train":
            return np.arange(self.history - 1, span.stop - self.horizon)
        return np.arange(span.start - 1, span.stop - 1, self.horizon)

    def build_splits(self) -> dict[str, Dataset]:
        train = self.ranges()["train"]
        mean, std = self.series[train].mean(axis=0), self.series[train].std(axis=0)
        self.mean, self.std = mean, np.where(std > 0, std, 1.0)
        self.preprocessing = {"mean": self.mean.tolist(), "std": self.std.tolist(),
                              "channel_axis": -1}
        series = torch.as_tensor((self.series - self.mean) / self.std, dtype=torch.float32)
        self.indices = {split: self.origins(split) for split in ("train", "val", "test")}
        return {split: self.windows(series, origins) for split, origins in self.indices.items()}

    def windows(self, series: torch.Tensor, origins: np.ndarray) -> TensorDataset:
        """(history [n, history, D], target [n, horizon, D]) of the windows at ``origins``;
        irregular series add their gaps [n, history - 1 + horizon] between the two."""
        past = torch.as_tensor(origins)[:, None] + torch.arange(1 - self.history, 1)
        future = torch.as_tensor(origins)[:, None] + torch.arange(1, self.horizon + 1)
        if self.gaps is None:
            return TensorDataset(series[past], series[future])
        gaps = torch.as_tensor(self.gaps, dtype=torch.float32)
        between = torch.as_tensor(origins)[:, None] + torch.arange(1 - self.history, self.horizon)
        return TensorDataset(series[past], gaps[between], series[future])


def lotka_volterra(state: np.ndarray, alpha: float, beta: float, gamma: float,
                   delta: float) -> np.ndarray:
    """The Lotka-Volterra vector field at ``state`` [..., 2] = (prey, predator).

    prey' = alpha prey - beta prey predator, predator' = delta prey predator - gamma predator.
    """
    prey, predator = state[..., 0], state[..., 1]
    return np.stack([alpha * prey - beta * prey * predator,
                     delta * prey * predator - gamma * predator], axis=-1)


class LotkaVolterraDataModule(TrajectoryDataModule):
    """A noisy Lotka-Volterra (predator-prey) trajectory, simulated with a known vector field.

    The clean trajectory (``self.clean``, DOP853 at rtol 1e-10) is observed every ``dt`` with
    Gaussian noise of ``noise`` times each component's standard deviation (seeded by
    ``seed``); the parameters default to the classic alpha=1.5, beta=1, gamma=3, delta=1,
    whose orbit through (1, 1) has a period of about 3.3 time units. With ``gap_spread`` > 0
    the observations are irregular: each gap is ``dt`` times a uniform draw from
    [1 - gap_spread, 1 + gap_spread] (seeded by ``seed``).

    Args:
        num_points: observations in the series.
        noise: observation noise, relative to each component's standard deviation.
        gap_spread: relative spread of the gaps between observations, in [0, 1) (0: regular).
        initial_state: (prey, predator) at time 0.
        params: (alpha, beta, gamma, delta).
        seed: seed of the noise and of the shuffle order.
    """

    def __init__(
        self,
        num_points: int = 400,
        noise: float = 0.02,
        gap_spread: float = 0.0,
        initial_state: Sequence[float] = (1.0, 1.0),
        params: Sequence[float] = (1.5, 1.0, 3.0, 1.0),
        history: int = 1,
        horizon: int = 20,
        dt: float = 0.1,
        val_windows: int = 2,
        test_windows: int = 4,
        batch_size: int = 32,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(history, horizon, dt, val_windows, test_windows, batch_size, seed,
                         num_workers)
        if noise < 0 or len(initial_state) != 2 or len(params) != 4:
            raise UserInputError("data.noise must be >= 0, data.initial_state two numbers and "
                             f"data.params four, got {noise}, {initial_state}, {params}")
        if not 0 <= gap_spread < 1:
            raise UserInputError(f"data.gap_spread must be in [0, 1), got {gap_spread}")
        self.noise, self.params = noise, tuple(params)
        gaps = None
        if gap_spread:  # a generator of its own: the regular series stay as they were
            spread = np.random.default_rng([seed, 1]).uniform(-gap_spread, gap_spread,
                                                              num_points - 1)
            gaps = dt * (1 + spread)
        self.observation_times = (np.arange(num_points) * dt if gaps is None
                                  else np.concatenate([[0.0], np.cumsum(gaps)]))
        solution = solve_ivp(
            lambda t, x: lotka_volterra(x, *self.params), (0.0, self.observation_times[-1]),
            np.asarray(initial_state, dtype=float), method="DOP853",
            t_eval=self.observation_times, rtol=1e-10, atol=1e-12,
        )
        self.clean = solution.y.T
        noise_scale = noise * self.clean.std(axis=0)
        rng = np.random.default_rng(seed)
        self.set_series(self.clean + noise_scale * rng.standard_normal(self.clean.shape), gaps)


class ForecastDataModule(TrajectoryDataModule):
    """A real univariate series bundled with sktime (read offline), framed as forecasting.

    ``lynx``: annual Canadian lynx trappings 1821-1934 (114 values, a ~10-year cycle);
    ``airline``: monthly airline passengers 1949-1960 (144 values, trend and seasonality).

    Args:
        name: "lynx" or "airline".
        log: model log10 of the values (both series are multiplicative in nature).
    """

    def __init__(
        self,
        name: Literal["lynx", "airline"] = "lynx",
        log: bool = True,
        history: int = 10,
        horizon: int = 14,
        dt: float = 0.1,
        val_windows: int = 1,
        test_windows: int = 1,
        batch_size: int = 16,
        seed: int = 0,
        num_workers: int = 0,
    ) -> None:
        super().__init__(history, horizon, dt, val_windows, test_windows, batch_size, seed,
                         num_workers)
        from sktime.datasets import load_airline, load_lynx

        loaders = {"lynx": load_lynx, "airline": load_airline}
        if name not in loaders:
            raise UserInputError(f"data.name must be one of {', '.join(loaders)}, got {name!r}")
        self.name, self.log = name, log
        values = loaders[name]().to_numpy(dtype=np.float64)[:, None]
        self.set_series(np.log10(values) if log else values)
