"""Trajectory models: forecast the observed states of a dynamical system at given times.

A trajectory model maps a history [batch, K, D] of K observations of a D-dimensional state
(the last one taken at time ``times[0]``) to predictions [batch, W, D] at ``times[1:]``. The
times are equally spaced, so they are the slice boundaries of a parareal block (or the output
times of a torchdiffeq block) and the block's trajectory output is the forecast itself.

An ``irregular`` model forecasts irregularly sampled series: it also takes each window's gaps
between observations and solves in the observation index (``IrregularTimeField``), whose
integer points are every sample's own observation times.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pnode_zoo.errors import UserInputError
from pnode_zoo.models.common import parareal_options, register_twins
from pnode_zoo.ode import (
    IrregularTimeField,
    MLPVectorField,
    ODEBlock,
    PararealODEBlock,
    PararealOptions,
)
from pnode_zoo.ode.methods import FORECAST_TOLERANCES

__all__ = [
    "TrajectoryGRU",
    "TrajectoryNODE",
    "check_gaps",
    "forecast_interval",
    "trajectory_gru",
    "trajectory_node",
    "trajectory_node_parareal",
]


class TrajectoryNODE(nn.Module):
    """Latest observation (plus ``augment`` dims encoded from the history) -> ODE block -> forecast.

    The state is the observed system itself, x(t0) = the last observation, optionally
    augmented by ``augment`` dimensions (Dupont et al. 2019) whose initial value is a linear
    function of the whole history, so that a partially observed system (e.g. a 1-d series)
    can still start from an unambiguous state. The block returns the state at every forecast
    time; its first ``state_dim`` components after the origin are the forecast. An irregular
    model's block solves in the observation index over an ``IrregularTimeField``: the window's
    forecast gaps follow the state, and the encoder also sees the history's gaps.

    Args:
        block: an ODE block with ``return_trajectory`` on.
        state_dim: D, observed components of the state.
        history: K, observations per input.
        augment: unobserved extra state dimensions.
        stride: the block's outputs per forecast interval (every ``stride``-th is a forecast).
        irregular: inputs come with their gaps (``forward(history, gaps)``).
    """

    def __init__(
        self, block: nn.Module, state_dim: int, history: int, augment: int = 0, stride: int = 1,
        irregular: bool = False,
    ) -> None:
        super().__init__()
        if augment < 0:
            raise UserInputError(f"augment must be >= 0, got {augment}")
        self.block = block
        self.state_dim, self.history, self.stride = state_dim, history, stride
        self.irregular = irregular
        inputs = history * state_dim + (history - 1 if irregular else 0)
        self.encoder = nn.Linear(inputs, augment) if augment else None

    @property
    def nfe(self) -> int:
        """Evaluations of the vector field in the last forward call."""
        return self.block.nfe

    def forward(self, history: torch.Tensor, gaps: torch.Tensor | None = None) -> torch.Tensor:
        """Forecast [batch, W, D] from history [batch, K, D] (and, for an irregular model,
        the window's gaps [batch, K - 1 + W] between consecutive observations)."""
        check_gaps(self.irregular, gaps)
        state = history[:, -1]
        if self.encoder is not None:
            inputs = history.flatten(1)
            if gaps is not None:
                inputs = torch.cat([inputs, gaps[:, : self.history - 1]], dim=-1)
            state = torch.cat([state, self.encoder(inputs)], dim=-1)
        if gaps is not None:
            state = torch.cat([state, gaps[:, self.history - 1 :]], dim=-1)
        path = self.block(state)[:: self.stride]
        return path[1:, :, : self.state_dim].transpose(0, 1).contiguous()


def check_gaps(irregular: bool, gaps: torch.Tensor | None) -> None:
    """ValueError unless an irregular model gets gaps and a regular one none.

    Args:
        irregular: whether the model was built for irregularly sampled series.
        gaps: the gaps given to its forward.
    """
    if (gaps is not None) != irregular:
        raise UserInputError(
            "an irregular trajectory model needs the windows' gaps and a regular one takes "
            "none: give irregularly sampled data to a model built with irregular=True"
        )


class TrajectoryGRU(nn.Module):
    """A GRU that steps from one observation time to the next, the gap as an input (the
    "RNN-Delta-t" baseline of Rubanova et al. 2019): the discrete twin of ``TrajectoryNODE``.

    The hidden state starts from the history (and its gaps); each step feeds the previous
    forecast and the gap to the next forecast time, and adds a linear read-out of the new hidden
    state to the previous forecast.

    Args:
        state_dim: D, observed components of the state.
        history: K, observations per input.
        gaps: the gaps between forecast times of a regular model ([W], used when no gaps are
            given).
        hidden: size of the hidden state.
        irregular: inputs come with their gaps (``forward(history, gaps)``).
    """

    def __init__(self, state_dim: int, history: int, gaps: Sequence[float], hidden: int = 64,
                 irregular: bool = False) -> None:
        super().__init__()
        self.history, self.irregular = history, irregular
        self.initial = nn.Linear(history * state_dim + (history - 1 if irregular else 0), hidden)
        self.cell = nn.GRUCell(state_dim + 1, hidden)
        self.readout = nn.Linear(hidden, state_dim)
        self.register_buffer("regular_gaps", torch.tensor(gaps, dtype=torch.float32),
                             persistent=False)

    def forward(self, history: torch.Tensor, gaps: torch.Tensor | None = None) -> torch.Tensor:
        """Forecast [batch, W, D] from history [batch, K, D] (and, for an irregular model,
        the window's gaps [batch, K - 1 + W] between consecutive observations)."""
        check_gaps(self.irregular, gaps)
        inputs = history.flatten(1)
        if gaps is None:
            ahead = self.regular_gaps.to(history.dtype).expand(len(history), -1)
        else:
            inputs = torch.cat([inputs, gaps[:, : self.history - 1]], dim=-1)
            ahead = gaps[:, self.history - 1 :]
        hidden, forecast, path = torch.tanh(self.initial(inputs)), history[:, -1], []
        for step in range(ahead.shape[1]):
            hidden = self.cell(torch.cat([forecast, ahead[:, step : step + 1]], dim=-1), hidden)
            forecast = forecast + self.readout(hidden)
            path.append(forecast)
        return torch.stack(path, dim=1)


def forecast_interval(times: Sequence[float]) -> tuple[float, float, int]:
    """(t0, t1, intervals) of equally spaced forecast times; ValueError for any other grid.

    Args:
        times: the forecast times, the origin first.
    """
    grid = torch.as_tensor(times, dtype=torch.float64)
    gaps = grid.diff()
    if grid.dim() != 1 or len(grid) < 2 or not bool((gaps > 0).all()):
        raise UserInputError(f"times must be at least 2 strictly increasing values, got {times}")
    if not torch.allclose(gaps, gaps[0], rtol=1e-6, atol=0.0):
        raise UserInputError(
            f"times must be equally spaced (the ODE blocks' output grid), got {times}")
    return float(grid[0]), float(grid[-1]), len(grid) - 1


def _field(dim: int, hidden: int, layers: int, times: Sequence[float],
           irregular: bool) -> tuple[nn.Module, float, float, int]:
    """The MLP field and the interval the block solves over: the forecast times, or for an
    irregular model the observation index 0 .. intervals."""
    t0, t1, intervals = forecast_interval(times)
    field = MLPVectorField(dim, hidden, layers)
    if irregular:
        return IrregularTimeField(field, dim), 0.0, float(intervals), intervals
    return field, t0, t1, intervals


def _forecaster(
    model: Callable[..., nn.Module],
    input_shape: Sequence[int] = (1, 2),
    times: Sequence[float] = (0.0, 1.0),
    irregular: bool = False,
) -> nn.Module:
    """The forecasters' frame: ``model`` for the data's history, state and times.

    Args:
        input_shape: (history length K, state dimension D) of one input.
        times: equally spaced observation times; the input ends at times[0], the output is
            at times[1:].
        irregular: forecast irregularly sampled series (set from the data module); an ODE
            forecaster's steps (and slices) are then per interval between two observations,
            whatever its length.
    """
    history, state_dim = input_shape
    return model(history, state_dim, times, irregular)


def _gru(history: int, state_dim: int, times: Sequence[float], irregular: bool, *,
         hidden: int = 64) -> TrajectoryGRU:
    """The GRU baseline.

    Args:
        hidden: size of the GRU's hidden state.
    """
    t0, t1, intervals = forecast_interval(times)
    return TrajectoryGRU(state_dim, history, [(t1 - t0) / intervals] * intervals, hidden,
                         irregular)


def _node(block: Callable[..., tuple[nn.Module, int]], history: int, state_dim: int,
          times: Sequence[float], irregular: bool, *, augment: int = 0, hidden: int = 64,
          layers: int = 2) -> TrajectoryNODE:
    """The neural ODE forecaster: the observed state (+ augmentation) integrated by ``block``.

    Args:
        augment: extra unobserved state dimensions, initialised from the history.
        hidden: width of the MLP vector field.
        layers: hidden layers of the MLP vector field.
    """
    field, t0, t1, intervals = _field(state_dim + augment, hidden, layers, times, irregular)
    body, stride = block(field, t0, t1, intervals)
    return TrajectoryNODE(body, state_dim, history, augment, stride, irregular)


def _forecast_by_torchdiffeq(
    field: nn.Module, t0: float, t1: float, intervals: int, *, method: str = "rk4",
    steps: int = 1, rtol: float = FORECAST_TOLERANCES.rtol,
    atol: float = FORECAST_TOLERANCES.atol,
) -> tuple[ODEBlock, int]:
    """The plain forecaster's block: one torchdiffeq solve through every forecast time.

    Args:
        field: the vector field.
        t0: the origin.
        t1: the last forecast time.
        intervals: forecast intervals.
        method: torchdiffeq method (``methods.METHODS``).
        steps: fixed-grid steps per interval between observation times.
        rtol: relative tolerance of an adaptive method (``methods.FORECAST_TOLERANCES``).
        atol: its absolute tolerance.
    """
    block = ODEBlock(field, t0, t1, method, steps * intervals, rtol, atol,
                     return_trajectory=True, num_intervals=intervals)
    return block, 1


def _forecast_by_parareal(
    field: nn.Module, t0: float, t1: float, intervals: int, *,
    parareal: PararealOptions | Mapping[str, Any] | None = None,
) -> tuple[PararealODEBlock, int]:
    """The parareal forecaster's block, whose slice boundaries include every forecast time.

    Args:
        field: the vector field.
        t0: the origin.
        t1: the last forecast time.
        intervals: forecast intervals.
        parareal: the block's ``PararealOptions`` (a mapping of some of its fields) on top of
            the zoo's defaults ``ZOO_PARAREAL`` (one RK4 step per slice, one Euler coarse step,
            tol 1e-3, the exact ``unrolled`` gradient); ``num_slices`` must be a multiple of
            the forecast intervals (None: one slice per interval).
    """
    given = parareal.as_dict() if isinstance(parareal, PararealOptions) else dict(parareal or {})
    options = parareal_options({"num_slices": intervals, **given})
    if options.num_slices % intervals:
        raise UserInputError(
            f"parareal.num_slices={options.num_slices} must be a multiple of the {intervals} "
            "forecast intervals"
        )
    block = PararealODEBlock(field, t0, t1, options, return_trajectory=True)
    return block, options.num_slices // intervals


trajectory_node, trajectory_node_parareal, trajectory_gru = register_twins(
    _forecaster,
    trajectory_node=("Neural ODE forecaster: the observed state (+ augmentation) integrated by "
                     "torchdiffeq.", _node, _forecast_by_torchdiffeq),
    trajectory_node_parareal=("Neural ODE forecaster with a parareal block whose slice "
                              "boundaries include every forecast time.", _node,
                              _forecast_by_parareal),
    trajectory_gru=("GRU forecaster stepping from one observation time to the next: the "
                    "discrete baseline.", _gru),
)
