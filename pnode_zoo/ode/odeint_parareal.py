"""``odeint_parareal``: torchdiffeq's ``odeint``, solved parallel in time by parareal."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from pnode_zoo.ode.options import PararealOptions
from pnode_zoo.ode.parareal.function import solve
from pnode_zoo.ode.parareal.problem import make_problem
from pnode_zoo.ode.slices import SliceFields
from pnode_zoo.ode.stats import PararealStats

if TYPE_CHECKING:
    from pnode_zoo.distributed.communicator import TimeGroup

__all__ = ["odeint_parareal"]


def odeint_parareal(
    func: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | Sequence[nn.Module],
    y0: torch.Tensor,
    t: torch.Tensor,
    *,
    options: PararealOptions | Mapping[str, Any] | None = None,
    adjoint_params: Sequence[torch.Tensor] | None = None,
    time_group: TimeGroup | None = None,
    return_stats: bool = False,
    **option_overrides: Any,
) -> torch.Tensor | tuple[torch.Tensor, PararealStats]:
    """Solve dy/dt = func(t, y) from y(t[0]) = y0 and return y at every time of ``t``.

    As torchdiffeq's ``odeint``: ``t`` is a 1-d tensor of strictly increasing times and the
    result has shape [len(t), *y0.shape], its first row y0. The intervals between consecutive
    times are the parareal slices (``options.num_slices`` a multiple of len(t) - 1 splits each
    interval into equal slices). ``func`` is called as torchdiffeq calls it, with a 0-d t
    (slices solved together run as one vmapped call; a field with ``time_per_sample = True``
    is called once with one time per sample instead). The gradient reaches y0 and
    ``adjoint_params`` (not t), as chosen by ``options.backward``.

    Args:
        func: the vector field (a module or any callable), or a sequence of one module per
            slice.
        y0: initial state, floating point, at least 1-d.
        t: the output times, 1-d, strictly increasing.
        options: a ``PararealOptions`` or a mapping of its fields (None: the defaults).
        adjoint_params: tensors to differentiate (None: ``func``'s parameters when it is a
            module, else none), as in torchdiffeq's ``odeint_adjoint``.
        time_group: share the slices with the other ranks of this ``TimeGroup`` (every rank
            calls with the same arguments), or None.
        return_stats: also return the call's ``PararealStats``.
        **option_overrides: ``PararealOptions`` fields applied on top of ``options``.
    """
    options = PararealOptions.create(options, **option_overrides)
    _check_inputs(y0, t, options)
    intervals = len(t) - 1
    num_slices = options.num_slices or intervals
    if num_slices % intervals:
        raise ValueError(
            f"num_slices={num_slices} must be a multiple of the {intervals} intervals of t"
        )
    per_interval = num_slices // intervals
    fractions = torch.linspace(0.0, 1.0, per_interval + 1, dtype=torch.float64)[:-1]
    grid = t.detach().to(device="cpu", dtype=torch.float64)
    times = torch.cat([(grid[:-1, None] + grid.diff()[:, None] * fractions).flatten(),
                       grid[-1:]])
    fields = SliceFields(func, num_slices, adjoint_params)
    problem = make_problem(fields, times, options, y0, time_group, return_trajectory=True)
    solution = solve(problem, y0)[::per_interval]
    return (solution, problem.stats) if return_stats else solution


def _check_inputs(y0: torch.Tensor, t: torch.Tensor, options: PararealOptions) -> None:
    if not (torch.is_tensor(y0) and y0.is_floating_point() and y0.dim() >= 1):
        raise ValueError("y0 must be a floating-point tensor with at least one dimension")
    if not torch.isfinite(y0).all():
        raise FloatingPointError("y0 contains NaN or Inf")
    if not (torch.is_tensor(t) and t.is_floating_point() and t.dim() == 1 and len(t) >= 2):
        raise ValueError("t must be a 1-d floating-point tensor of at least two times")
    if not (torch.isfinite(t).all() and (t.diff() > 0).all()):
        raise ValueError(f"t must be finite and strictly increasing, got {t.tolist()}")
    if options.warm_start:
        raise ValueError("warm_start needs a PararealODEBlock, which keeps the last trajectory")
