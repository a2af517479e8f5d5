"""PararealODEBlock: a neural-ODE block solved parallel-in-time by parareal."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pnode_zoo.errors import UserInputError
from pnode_zoo.ode.options import PararealOptions
from pnode_zoo.ode.parareal.function import solve
from pnode_zoo.ode.parareal.problem import make_problem
from pnode_zoo.ode.slices import SliceFields
from pnode_zoo.ode.stats import PararealStats

if TYPE_CHECKING:
    from pnode_zoo.distributed.communicator import TimeGroup

__all__ = ["PararealODEBlock"]


class PararealODEBlock(nn.Module):
    """Solve dx/dt = f(t, x) over [t0, t1] by parareal on ``num_slices`` uniform time slices.

    ``func`` is called as torchdiffeq calls it, f(t, x) with a 0-d t and x batch first; the
    slices solved together run as one vmapped call. A field that sets the attribute
    ``time_per_sample = True`` (the zoo's fields do) is instead called once on all slices'
    samples stacked along the batch, with t holding one time per sample. Either way the field
    must treat samples independently (no batch statistics: GroupNorm or LayerNorm, not
    BatchNorm), and per-slice modules must not draw random numbers (they run under vmap).

    Iterations: K = 0 is the coarse sweep alone; after k iterations the states at t_0..t_k
    equal the serial fine solution exactly, so K = N reproduces it. The iteration stops once
    the largest relative change of a slice-boundary state is below ``options.tol``, or at the
    ``options.max_iters`` cap; ``stats.converged`` says which. The gradient is chosen by
    ``options.backward`` (see ``PararealOptions``). Double backward is not supported.

    Limits: implicit methods build a dense per-sample Jacobian (D^2 numbers for a state of D),
    so they suit small states. With an adaptive fine method the slices solved together share
    their steps (each slice meets rtol/atol, the worst one sets the step), so F_n depends,
    within the tolerance, on which slices share its batch. A warm start reuses the previous
    trajectory whenever the shapes match, even for another batch: still correct, only a worse
    guess.

    Args:
        func: one module f(t, x) shared by all slices (a classic neural ODE), or a sequence
            (list or ``nn.ModuleList``) of ``num_slices`` modules of one architecture, one per
            slice (a continuous-depth ResNet of N stages).
        t0: start time.
        t1: end time (> t0).
        options: a ``PararealOptions`` or a mapping of its fields (None: the defaults).
        return_trajectory: return the states at all N+1 slice boundaries, [N+1, *x0.shape].
        **option_overrides: ``PararealOptions`` fields applied on top of ``options``.

    Attributes:
        options: the ``PararealOptions`` in force; assign a new one (e.g. with
            ``dataclasses.replace``) to change limits between calls (``num_slices`` is fixed).
        stats: ``PararealStats`` of the last call (backward fields filled in by backward).
        time_group: a ``pnode_zoo.distributed.TimeGroup`` whose ranks share the slices in
            contiguous chunks (``num_slices`` divisible by its size), or None (default): this
            process solves all. Set by ``TimeParallelStrategy``; every rank of the group must
            call the block with the same input, and all get the same output and gradients.
    """

    def __init__(
        self,
        func: nn.Module | Sequence[nn.Module],
        t0: float = 0.0,
        t1: float = 1.0,
        options: PararealOptions | Mapping[str, Any] | None = None,
        *,
        return_trajectory: bool = False,
        **option_overrides: Any,
    ) -> None:
        super().__init__()
        per_slice = isinstance(func, (list, tuple, nn.ModuleList))
        options = PararealOptions.create(options, **option_overrides)
        if options.num_slices is None:
            options = dataclasses.replace(options, num_slices=len(func) if per_slice else 1)
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise UserInputError(f"need finite t0 < t1, got t0={t0!r}, t1={t1!r}")
        self.func = nn.ModuleList(func) if per_slice else func
        self._fields = SliceFields(self.func, options.num_slices)
        # a subclass may give G fields of its own (a cheaper coarse model of the same parameters)
        self._coarse_fields: SliceFields | None = None
        self.t0, self.t1 = float(t0), float(t1)
        self._times = torch.linspace(self.t0, self.t1, options.num_slices + 1,
                                     dtype=torch.float64)
        self._options = options
        self.return_trajectory = return_trajectory
        self.time_group: TimeGroup | None = None
        self.stats: PararealStats | None = None
        self._previous: torch.Tensor | None = None

    @property
    def options(self) -> PararealOptions:
        return self._options

    @options.setter
    def options(self, value: PararealOptions | Mapping[str, Any]) -> None:
        value = PararealOptions.create(value)
        if value.num_slices not in (None, self.num_slices):
            raise UserInputError(
                f"num_slices is fixed at construction ({self.num_slices}), got {value.num_slices}"
            )
        self._options = dataclasses.replace(value, num_slices=self.num_slices)

    @property
    def num_slices(self) -> int:
        """N, the number of time slices."""
        return self._options.num_slices

    def forward(
        self, x0: torch.Tensor, initial_guess: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x(t1), or the states at all slice boundaries with ``return_trajectory``.

        Args:
            x0: initial state, batch first, floating point.
            initial_guess: states [N+1, *x0.shape] to start the iteration from instead of the
                coarse sweep (row 0 is ignored: the start is x0). Overrides ``warm_start``.
        """
        if not (torch.is_tensor(x0) and x0.is_floating_point() and x0.dim() >= 1):
            raise ValueError("x0 must be a floating-point tensor with a leading batch dimension")
        if not torch.isfinite(x0).all():
            raise FloatingPointError("x0 contains NaN or Inf")
        shape = (self.num_slices + 1, *x0.shape)
        guess = initial_guess
        if guess is None and self.options.warm_start and _matches(self._previous, shape, x0):
            guess = self._previous
        if guess is not None:
            if not _matches(guess, shape, x0):
                raise ValueError(
                    f"initial_guess must have shape {tuple(shape)} and x0's dtype and device, "
                    f"got {tuple(guess.shape)}"
                )
            if not torch.isfinite(guess).all():
                raise ValueError("initial_guess contains NaN or Inf")
            guess = guess.detach()
        problem = make_problem(
            self._fields, self._times, self.options, x0, self.time_group, self.return_trajectory,
            self._coarse_fields,
        )
        self.stats = problem.stats
        states = solve(problem, x0, guess)
        if self.options.warm_start:
            self._previous = states.detach()
        return states if self.return_trajectory else states[-1]

    @property
    def nfe(self) -> int:
        """Calls of f (coarse and fine) so far in the last call; after backward, both passes."""
        return 0 if self.stats is None else self.stats.nfe_coarse + self.stats.nfe_fine

    def extra_repr(self) -> str:
        o = self.options
        return (
            f"t0={self.t0}, t1={self.t1}, num_slices={o.num_slices}, "
            f"coarse={o.coarse}x{o.coarse_steps}, fine={o.fine}x{o.fine_steps}, "
            f"max_iters={o.max_iters}, tol={o.tol}, backward={o.backward!r}"
        )


def _matches(tensor: torch.Tensor | None, shape: tuple[int, ...], x0: torch.Tensor) -> bool:
    return (
        tensor is not None
        and tuple(tensor.shape) == tuple(shape)
        and tensor.dtype == x0.dtype
        and tensor.device == x0.device
    )
