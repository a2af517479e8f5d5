"""The plain neural-ODE block: x(t1) from x(t0) by one torchdiffeq solve (the serial baseline)."""

from __future__ import annotations

import torch
import torchdiffeq
from torch import nn

from pnode_zoo.errors import UserInputError
from pnode_zoo.ode.methods import METHODS, MODEL_TOLERANCES, method_names

__all__ = ["ODEBlock"]


class _CountingField(nn.Module):
    """f(t, x) that counts its calls (torchdiffeq does not report them)."""

    def __init__(self, func: nn.Module) -> None:
        super().__init__()
        self.func = func
        self.calls = 0

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.func(t, x)


class ODEBlock(nn.Module):
    """Integrate dx/dt = f(t, x) over [t0, t1] with ``torchdiffeq.odeint``.

    Args:
        func: the vector field, an ``nn.Module`` called as ``func(t, x)``.
        t0: start time.
        t1: end time.
        method: any torchdiffeq method name ("rk4", "euler", "dopri5", ...: ``methods.METHODS``).
        steps: number of steps for fixed-grid methods (ignored by adaptive ones).
        rtol: relative tolerance of adaptive methods (``methods.MODEL_TOLERANCES``).
        atol: absolute tolerance of adaptive methods.
        adjoint: use ``odeint_adjoint`` (memory O(1) in steps, recomputes the solve backwards).
        return_trajectory: return the states at the ``num_intervals + 1`` equally spaced times
            from t0 to t1, [num_intervals + 1, *x0.shape], instead of x(t1) alone.
        num_intervals: intervals of the returned trajectory; fixed-grid methods need ``steps``
            to be a multiple of it so that every output time is a grid point.

    Attributes:
        nfe: evaluations of f in the last forward call.
    """

    def __init__(
        self,
        func: nn.Module,
        t0: float = 0.0,
        t1: float = 1.0,
        method: str = "rk4",
        steps: int = 4,
        rtol: float = MODEL_TOLERANCES.rtol,
        atol: float = MODEL_TOLERANCES.atol,
        adjoint: bool = False,
        return_trajectory: bool = False,
        num_intervals: int = 1,
    ) -> None:
        super().__init__()
        if t1 <= t0:
            raise UserInputError(f"t1 must be greater than t0, got t0={t0}, t1={t1}")
        if method not in method_names():
            known = ", ".join(method_names())
            raise UserInputError(f"unknown ODE method {method!r}; choose one of: {known}")
        if steps < 1 or num_intervals < 1:
            raise UserInputError(
                f"steps and num_intervals must be at least 1, got {steps} and {num_intervals}"
            )
        if METHODS[method].fixed_grid and steps % num_intervals:
            raise UserInputError(
                f"steps ({steps}) must be a multiple of num_intervals ({num_intervals}) so that "
                "every output time is on the fixed grid"
            )
        self.func = func
        self.method = method
        self.rtol, self.atol = rtol, atol
        self.adjoint = adjoint
        self.steps_per_interval = steps // (num_intervals if return_trajectory else 1)
        self.return_trajectory = return_trajectory
        intervals = num_intervals if return_trajectory else 1
        times = torch.linspace(t0, t1, intervals + 1, dtype=torch.float64)
        self.register_buffer("times", times, persistent=False)
        self.nfe = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counted = _CountingField(self.func)
        kwargs = {"rtol": self.rtol, "atol": self.atol, "method": self.method}
        if METHODS[self.method].fixed_grid:
            kwargs["options"] = {"grid_constructor": self._step_grid}
        if self.adjoint:
            kwargs["adjoint_params"] = tuple(self.func.parameters())
        solve = torchdiffeq.odeint_adjoint if self.adjoint else torchdiffeq.odeint
        path = solve(counted, x, self.times.to(x.dtype), **kwargs)
        self.nfe = counted.calls
        return path if self.return_trajectory else path[-1]

    def _step_grid(self, func: object, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The fixed grid: equal steps inside every output interval, so that each output time
        is a grid point (torchdiffeq's ``step_size`` grid can miss them by rounding)."""
        fractions = torch.arange(self.steps_per_interval, dtype=t.dtype) / self.steps_per_interval
        inner = t[:-1, None] + t.diff()[:, None] * fractions.to(t.device)
        return torch.cat([inner.flatten(), t[-1:]])
