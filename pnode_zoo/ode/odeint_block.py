"""The plain neural-ODE block: x(t1) from x(t0) by one torchdiffeq solve (the serial baseline)."""

from __future__ import annotations

import torch
import torchdiffeq
from torch import nn
from torchdiffeq._impl.odeint import SOLVERS

FIXED_GRID_METHODS = ("euler", "midpoint", "rk4", "heun2", "heun3", "explicit_adams",
                      "implicit_adams")


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
        method: any torchdiffeq method name ("rk4", "euler", "dopri5", ...).
        steps: number of steps for fixed-grid methods (ignored by adaptive ones).
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        adjoint: use ``odeint_adjoint`` (memory O(1) in steps, recomputes the solve backwards).

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
        rtol: float = 1e-3,
        atol: float = 1e-4,
        adjoint: bool = False,
    ) -> None:
        super().__init__()
        if t1 <= t0:
            raise ValueError(f"t1 must be greater than t0, got t0={t0}, t1={t1}")
        if method not in SOLVERS:
            known = ", ".join(sorted(SOLVERS))
            raise ValueError(f"unknown ODE method {method!r}; choose one of: {known}")
        if steps < 1:
            raise ValueError(f"steps must be at least 1, got {steps}")
        self.func = func
        self.method = method
        self.rtol, self.atol = rtol, atol
        self.adjoint = adjoint
        self.step_size = (t1 - t0) / steps
        self.register_buffer("times", torch.tensor([t0, t1]), persistent=False)
        self.nfe = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        counted = _CountingField(self.func)
        kwargs = {"rtol": self.rtol, "atol": self.atol, "method": self.method}
        if self.method in FIXED_GRID_METHODS:
            kwargs["options"] = {"step_size": self.step_size}
        if self.adjoint:
            kwargs["adjoint_params"] = tuple(self.func.parameters())
        solve = torchdiffeq.odeint_adjoint if self.adjoint else torchdiffeq.odeint
        out = solve(counted, x, self.times.to(x.dtype), **kwargs)[-1]
        self.nfe = counted.calls
        return out
