"""PararealODEBlock: a neural-ODE block solved parallel-in-time by parareal."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import nn

from pnode_zoo.ode.parareal import BACKWARD_MODES, Problem, parareal
from pnode_zoo.ode.propagators import Propagator
from pnode_zoo.ode.slices import SliceFields
from pnode_zoo.ode.stats import PararealStats

if TYPE_CHECKING:
    from pnode_zoo.distributed.communicator import TimeGroup


class PararealODEBlock(nn.Module):
    """Solve dx/dt = f(t, x) over [t0, t1] by parareal on ``num_slices`` uniform time slices.

    ``func`` is called as f(t, x) with x batch first and t either a 0-d tensor or a 1-d tensor
    of shape [batch] holding one time per sample: the block stacks the unconverged slices along
    the batch dimension for one batched fine solve, and slice n's samples get t_n + s. The
    field must also treat samples independently (no batch statistics: use GroupNorm or
    LayerNorm, not BatchNorm), and per-slice modules must not draw random numbers (they run
    under ``torch.func.vmap``).

    Iterations: K = 0 is the coarse sweep alone; after k iterations the states at t_0..t_k
    equal the serial fine solution exactly, so ``max_iters = num_slices`` reproduces it. The
    iteration stops earlier once the largest relative change of a slice-boundary state is below
    ``tol``. Gradients are the discrete adjoint of the fine propagators at the forward states
    (F is recomputed in backward; no graph is kept from the forward pass): with
    ``backward="serial"``, or ``backward_max_iters = N``, it is exact for those states, and for
    a forward pass run to ``max_iters = N`` it is the gradient of the serial fine solve. Fewer
    backward iterations give a cheaper, inexact gradient. Double backward is not supported.

    Limits: implicit methods build a dense per-sample Jacobian (D^2 numbers for a state of D),
    so they suit small states. With an adaptive fine method the slices solved together share
    their steps (each slice meets rtol/atol, the worst one sets the step), so F_n depends,
    within the tolerance, on which slices share its batch, and the backward recomputation may
    step differently from the forward pass. A warm start reuses the previous trajectory
    whenever the shapes match, even for another batch: still correct, only a worse guess.

    Args:
        func: one module f(t, x) shared by all slices (a classic neural ODE), or a sequence
            (list or ``nn.ModuleList``) of ``num_slices`` modules of one architecture, one per
            slice (a continuous-depth ResNet of N stages).
        t0: start time.
        t1: end time (> t0).
        num_slices: N; defaults to the length of a per-slice sequence, else 1.
        coarse: method of the coarse propagator G (a name from ``SOLVERS``).
        coarse_steps: steps per slice of G (fixed-step and implicit methods).
        fine: method of the fine propagator F.
        fine_steps: steps per slice of F (fixed-step and implicit methods).
        rtol: relative tolerance of adaptive methods.
        atol: absolute tolerance of adaptive methods.
        newton_tol: Newton tolerance of implicit methods (None: 10 machine epsilons).
        newton_max_iters: Newton iterations allowed per implicit step.
        max_iters: forward parareal iterations allowed, clamped to N (None: N). A plain
            attribute: schedules may change it between calls.
        tol: forward stopping tolerance on the relative change (0: always run max_iters).
        backward: ``"parareal"`` or ``"serial"`` (sequential chain of VJPs, exact).
        backward_max_iters: adjoint parareal iterations allowed, clamped to N (None: N).
        backward_tol: adjoint stopping tolerance (None: ``tol``).
        return_trajectory: return the states at all N+1 slice boundaries, [N+1, *x0.shape].
        warm_start: start from the previous call's trajectory when its shape, dtype and device
            match x0's, instead of the coarse sweep.

    Attributes:
        stats: ``PararealStats`` of the last call (backward fields filled in by backward).
        coarse: the coarse ``Propagator`` (method name, steps, tolerances).
        fine: the fine ``Propagator``.
        max_iters, tol, backward, backward_max_iters, backward_tol, return_trajectory,
        warm_start: as the arguments; settable, checked at the next call.
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
        num_slices: int | None = None,
        *,
        coarse: str = "euler",
        coarse_steps: int = 1,
        fine: str = "rk4",
        fine_steps: int = 8,
        rtol: float = 1e-7,
        atol: float = 1e-9,
        newton_tol: float | None = None,
        newton_max_iters: int = 20,
        max_iters: int | None = None,
        tol: float = 1e-6,
        backward: str = "parareal",
        backward_max_iters: int | None = None,
        backward_tol: float | None = None,
        return_trajectory: bool = False,
        warm_start: bool = False,
    ) -> None:
        super().__init__()
        per_slice = isinstance(func, (list, tuple, nn.ModuleList))
        if num_slices is None:
            num_slices = len(func) if per_slice else 1
        if not isinstance(num_slices, int) or num_slices < 1:
            raise ValueError(f"num_slices must be an integer >= 1, got {num_slices!r}")
        if not (math.isfinite(t0) and math.isfinite(t1) and t1 > t0):
            raise ValueError(f"need finite t0 < t1, got t0={t0!r}, t1={t1!r}")
        self.func = nn.ModuleList(func) if per_slice else func
        self._fields = SliceFields(self.func, num_slices)
        self.t0, self.t1, self.num_slices = float(t0), float(t1), num_slices
        newton = {"newton_tol": newton_tol, "newton_max_iters": newton_max_iters}
        self.coarse = Propagator(coarse, coarse_steps, rtol, atol, **newton, name="coarse")
        self.fine = Propagator(fine, fine_steps, rtol, atol, **newton, name="fine")
        self.max_iters = max_iters
        self.tol = tol
        self.backward = backward
        self.backward_max_iters = backward_max_iters
        self.backward_tol = backward_tol
        self.return_trajectory = return_trajectory
        self.warm_start = warm_start
        self.time_group: TimeGroup | None = None
        self.stats: PararealStats | None = None
        self._previous: torch.Tensor | None = None
        self._problem()

    def _problem(self) -> Problem:
        """Validate the settable attributes and freeze them for one call."""
        iters = {"max_iters": self.max_iters, "backward_max_iters": self.backward_max_iters}
        for name, value in iters.items():
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ValueError(f"{name} must be None or an integer >= 0, got {value!r}")
        backward_tol = self.tol if self.backward_tol is None else self.backward_tol
        for name, value in {"tol": self.tol, "backward_tol": backward_tol}.items():
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if self.backward not in BACKWARD_MODES:
            raise ValueError(
                f"backward must be one of {', '.join(BACKWARD_MODES)}, got {self.backward!r}"
            )
        n, group = self.num_slices, self.time_group
        if group is not None and n % group.size:
            raise ValueError(
                f"num_slices={n} is not divisible by the time group size {group.size}"
            )
        stats = PararealStats(num_slices=n)
        if group is not None:
            stats.rank, stats.ranks = group.index, group.size
        return Problem(
            fields=self._fields,
            coarse=self.coarse,
            fine=self.fine,
            t0=self.t0,
            t1=self.t1,
            num_slices=n,
            max_iters=n if self.max_iters is None else min(self.max_iters, n),
            tol=float(self.tol),
            backward=self.backward,
            backward_max_iters=(
                n if self.backward_max_iters is None else min(self.backward_max_iters, n)
            ),
            backward_tol=float(backward_tol),
            return_trajectory=bool(self.return_trajectory),
            stats=stats,
            group=group,
        )

    def forward(
        self, x0: torch.Tensor, initial_guess: torch.Tensor | None = None
    ) -> torch.Tensor:
        """x(t1), or the states at all slice boundaries with ``return_trajectory``.

        Args:
            x0: initial state, batch first, floating point.
            initial_guess: states [N+1, *x0.shape] to start the iteration from instead of the
                coarse sweep (row 0 is ignored: the start is x0). Overrides ``warm_start``.
        """
        problem = self._problem()
        if not (torch.is_tensor(x0) and x0.is_floating_point() and x0.dim() >= 1):
            raise ValueError("x0 must be a floating-point tensor with a leading batch dimension")
        if not torch.isfinite(x0).all():
            raise FloatingPointError("x0 contains NaN or Inf")
        shape = (self.num_slices + 1, *x0.shape)
        guess = initial_guess
        if guess is None and self.warm_start and _matches(self._previous, shape, x0):
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
        self.stats = problem.stats
        states = parareal(problem, x0, guess)
        if self.warm_start:
            self._previous = states.detach()
        return states if problem.return_trajectory else states[-1]

    @property
    def nfe(self) -> int:
        """Calls of f (coarse and fine) so far in the last call; after backward, both passes."""
        return 0 if self.stats is None else self.stats.nfe_coarse + self.stats.nfe_fine

    def extra_repr(self) -> str:
        return (
            f"t0={self.t0}, t1={self.t1}, num_slices={self.num_slices}, "
            f"coarse={self.coarse.method}x{self.coarse.steps}, "
            f"fine={self.fine.method}x{self.fine.steps}, max_iters={self.max_iters}, "
            f"tol={self.tol}, backward={self.backward!r}"
        )


def _matches(tensor: torch.Tensor | None, shape: tuple[int, ...], x0: torch.Tensor) -> bool:
    return (
        tensor is not None
        and tuple(tensor.shape) == tuple(shape)
        and tensor.dtype == x0.dtype
        and tensor.device == x0.device
    )
