"""Propagators: solve dx/dt = f(t, x) across one time slice with a method chosen by name.

Methods are named in ``methods.METHODS``, the zoo's one table. Explicit Runge-Kutta methods,
fixed-step and adaptive, are torchdiffeq's: the adaptive ones run through ``odeint``, the
fixed-step ones step its tableaus here (see ``methods.Tableau``); the implicit ones are the
Newton-solved theta-methods of ``implicit.py``. A propagator solves a set of slices at once,
stacked along the batch, in normalised time tau in [0, 1] (slice g's time is start_g + tau *
span_g): that is how slices with different start times, and different lengths, share one
batched solve.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torchdiffeq import odeint

from pnode_zoo.errors import UserInputError
from pnode_zoo.ode.implicit import theta_method
from pnode_zoo.ode.methods import METHODS, PROPAGATOR_TOLERANCES, Method, Tableau, method_names

__all__ = ["Method", "Propagator", "SliceField", "Tableau", "Work"]

SliceField = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Work:
    """Work done by propagator calls, accumulated in place.

    Attributes:
        nfe: calls of the vector field. A batched call counts once, whatever its batch; so does
            the one vmapped reverse-mode call that builds a Newton Jacobian.
        newton_iters: Newton iterations (each one batched dense linear solve).
        linear_solves: per-sample linear systems solved (a batched solve of B samples counts B).
    """

    nfe: int = 0
    newton_iters: int = 0
    linear_solves: int = 0


def _check_positive(name: str, value: float) -> None:
    if not value > 0:
        raise UserInputError(f"{name} must be positive, got {value!r}")


@dataclass(frozen=True)
class Propagator:
    """A solver for one time slice, validated on construction.

    Args:
        method: a propagator's method, a name from ``methods.METHODS``.
        steps: steps per slice for fixed-step and implicit methods (ignored by adaptive ones).
        rtol: relative tolerance of adaptive methods (``methods.PROPAGATOR_TOLERANCES``).
        atol: absolute tolerance of adaptive methods.
        newton_tol: Newton tolerance of implicit methods, relative to the size of the terms of
            the step equation; None means 10 machine epsilons of the state's dtype (the rounding
            floor of that relative residual is about 0.2 epsilons).
        newton_max_iters: Newton iterations allowed per step before failing.
        name: what the propagator is called in error messages (e.g. "coarse").
    """

    method: str
    steps: int = 1
    rtol: float = PROPAGATOR_TOLERANCES.rtol
    atol: float = PROPAGATOR_TOLERANCES.atol
    newton_tol: float | None = None
    newton_max_iters: int = 20
    name: str = "method"

    def __post_init__(self) -> None:
        known = method_names(propagator=True)
        if self.method not in known:
            raise UserInputError(
                f"{self.name}: unknown method {self.method!r}; known methods: " + ", ".join(known)
            )
        if not isinstance(self.steps, int) or self.steps < 1:
            raise UserInputError(f"{self.name}_steps must be an integer >= 1, got {self.steps!r}")
        _check_positive("rtol", self.rtol)
        _check_positive("atol", self.atol)
        if self.newton_tol is not None:
            _check_positive("newton_tol", self.newton_tol)
        if not isinstance(self.newton_max_iters, int) or self.newton_max_iters < 1:
            raise UserInputError(
                f"newton_max_iters must be an integer >= 1, got {self.newton_max_iters!r}"
            )

    @property
    def info(self) -> Method:
        return METHODS[self.method]

    def __call__(
        self,
        field: SliceField,
        starts: torch.Tensor,
        spans: torch.Tensor,
        x: torch.Tensor,
        work: Work,
        steps: range | None = None,
    ) -> torch.Tensor:
        """Solve across G slices at once; return the states at their ends.

        The solve runs in normalised time tau in [0, 1] for every slice, on
        dx/dtau = span_g * f(start_g + tau * span_g, x), so slices of different lengths share
        one fixed grid (or one adaptive step sequence) and one call of f per stage.

        Args:
            field: f(t, x) with ``t`` holding one time per slice (shape [G]) and x the G slices'
                samples stacked along the batch dimension.
            starts: start time of each slice, shape [G].
            spans: length of each slice (> 0), shape [G].
            x: the states at the slices' starts, [G * batch, ...].
            work: counters to add this solve's work to.
            steps: fixed-step methods only: take just these steps of the grid, from x at the
                first one's start, and return the state after each, [len(steps), G * batch,
                ...] (the same arithmetic as the whole solve: a step-wise re-run reproduces it).
        """
        groups = starts.shape[0]
        scale = spans.repeat_interleave(x.shape[0] // groups).view(-1, *(1,) * (x.dim() - 1))

        def local(tau: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            work.nfe += 1
            return scale * field(starts + tau * spans, y)

        info = self.info
        if info.kind == "implicit":
            tol = self.newton_tol
            if tol is None:
                tol = 10 * torch.finfo(x.dtype).eps
            return theta_method(
                local, x, 1.0, self.steps, info.theta,
                tol=tol, max_iters=self.newton_max_iters, work=work,
            )
        if info.kind == "fixed":
            grid = torch.linspace(0.0, 1.0, self.steps + 1, dtype=x.dtype, device=x.device)
            dt = grid[1] - grid[0]
            taken = range(self.steps) if steps is None else steps
            path = []
            for n in taken:
                x = _rk_step(info.tableau, local, grid[n], dt, x)
                if steps is not None:
                    path.append(x)
            # output at tau = 1 only: no copy of every intermediate state
            return x if steps is None else torch.stack(path)
        if steps is not None:
            raise ValueError(f"{self.name}: only fixed-step methods run step by step")
        options = {"norm": _group_rms_norm(groups)} if groups > 1 else {}
        interval = torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device)
        return odeint(
            local, x, interval, method=self.method, rtol=self.rtol, atol=self.atol,
            options=options,
        )[-1]


def _rk_step(tableau: Tableau, field: SliceField, t: torch.Tensor, dt: torch.Tensor,
             y: torch.Tensor) -> torch.Tensor:
    """One step of an explicit Runge-Kutta method from (t, y)."""
    stages: list[torch.Tensor] = []
    for c, a in zip(tableau.c, tableau.a, strict=True):
        increment = sum(a_j * k for a_j, k in zip(a, stages, strict=True) if a_j)
        stages.append(field(t + c * dt, y + dt * increment if stages else y))
    return y + dt * sum(b * k for b, k in zip(tableau.b, stages, strict=True) if b)


def _group_rms_norm(groups: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """Largest RMS norm over the stacked slices: every slice meets the tolerance on its own."""

    def norm(tensor: torch.Tensor) -> torch.Tensor:
        return tensor.reshape(groups, -1).pow(2).mean(dim=1).sqrt().max()

    return norm
