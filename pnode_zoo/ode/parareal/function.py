"""The autograd ``Function`` that joins the forward iteration to the chosen gradient."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch.autograd.function import once_differentiable

from pnode_zoo.distributed.communicator import RankFailed
from pnode_zoo.ode.parareal import adjoints
from pnode_zoo.ode.parareal.iteration import Sweep, iterate
from pnode_zoo.ode.parareal.problem import (
    ParamGrads,
    Problem,
    coarse_solve,
    coarse_step,
    fine_solve,
)

__all__ = ["solve", "solve_backward", "solve_forward"]


def solve(problem: Problem, x0: torch.Tensor, guess: torch.Tensor | None = None) -> torch.Tensor:
    """The parareal states U [N+1, *x0.shape], differentiable in x0 and the fields' parameters.

    Without anything to differentiate (``torch.no_grad()``, frozen parameters and x0) no graph
    and no states are kept.

    Args:
        problem: the call.
        x0: the initial state.
        guess: states [N+1, *x0.shape] to start from instead of the coarse sweep (detached).
    """
    params = problem.fields.parameters()
    if torch.is_grad_enabled() and (x0.requires_grad or params):
        return _Parareal.apply(problem, x0, guess, *params)
    with torch.no_grad():
        return solve_forward(problem, x0, guess, keep_levels=False).states


def solve_forward(
    problem: Problem,
    x0: torch.Tensor,
    guess: torch.Tensor | None,
    keep_levels: bool,
    tape: adjoints.Tape | None = None,
    paths: adjoints.Paths | None = None,
) -> Sweep:
    """Run the forward iteration and record its statistics.

    Args:
        problem: the call.
        x0: the initial state.
        guess: states to start from instead of the coarse sweep, or None.
        keep_levels: keep every iteration's states (for the unrolled gradient).
        tape: run the propagators through this tape, which keeps their graphs.
        paths: run the fine solves through this, which keeps their step states.
    """

    def where(boundary: int, iteration: int) -> str:
        return (
            f"non-finite state at the end of {problem.where(boundary)} "
            f"in forward parareal iteration {iteration}"
        )

    with _recording(problem):
        sweep = iterate(
            x0,
            tape.fine_solve if tape else paths.fine_solve if paths else (
                lambda slices, x: fine_solve(problem, slices, x)),
            tape.coarse_step if tape else lambda n, x: coarse_step(problem, n, x),
            num_slices=problem.num_slices,
            max_iters=problem.max_iters,
            tol=problem.options.tol,
            where=where,
            group=problem.group,
            guess=guess,
            coarse_set=tape.coarse_solve if tape else lambda s, x: coarse_solve(problem, s, x),
            keep_levels=keep_levels,
            last_only=not (problem.return_trajectory or problem.options.warm_start),
            agree_each_iteration=not problem.options.pipelined,
        )
    stats, residuals = problem.stats, sweep.residuals
    stats.forward_iters, stats.forward_residuals = len(residuals), residuals
    stats.converged = len(residuals) == problem.num_slices or bool(
        residuals and residuals[-1] < problem.options.tol
    )
    return sweep


def solve_backward(
    problem: Problem,
    states: torch.Tensor,
    levels: list[torch.Tensor],
    grad_states: torch.Tensor,
    guessed: bool,
    need_params: bool,
    tape: adjoints.Tape | None = None,
    paths: adjoints.Paths | None = None,
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """dL/dx0 and (if asked) dL/dθ, in ``SliceFields.parameters`` order, by the call's mode."""
    grads = ParamGrads(problem) if need_params else None
    mode = problem.options.backward
    with _recording(problem):
        if mode == "unrolled":
            grad_x0 = adjoints.unrolled(problem, levels, grad_states, guessed, grads, tape,
                                        paths)
            problem.stats.backward_iters = len(levels) - 1
        elif mode == "fine_adjoint":
            grad_x0 = adjoints.fine_adjoint(problem, states, grad_states, grads)
        else:
            grad_x0 = adjoints.parareal_adjoint(problem, states, grad_states, grads)
    return grad_x0, None if grads is None else grads.result()


@contextmanager
def _recording(problem: Problem) -> Iterator[None]:
    """Send the time group's communication and wait times inside the call to its stats, and
    post an exception raised on this rank outside the propagators for the other ranks (which
    learn of it when this process ends; see ``pnode_zoo.distributed.communicator``)."""
    group = problem.group
    if group is None:
        yield
        return
    before = dict(group.seconds)
    group.begin_call()
    group.timers.log = problem.stats.timeline
    try:
        yield
        group.wait_sends()
    except RankFailed:
        group.settle_sends()
        raise
    except Exception as exc:
        if exc is not group.timers.failure:
            group.fail(exc)
        group.settle_sends()
        raise
    finally:
        group.timers.log = None
        problem.stats.time_comm += group.seconds["comm"] - before["comm"]
        problem.stats.time_wait += group.seconds["wait"] - before["wait"]


class _Parareal(torch.autograd.Function):
    """x0, θ -> U; backward by the call's gradient mode (θ are inputs, as in torchdiffeq)."""

    @staticmethod
    def forward(ctx, problem: Problem, x0: torch.Tensor, guess, *params: torch.Tensor):
        unrolled, guessed = problem.options.backward == "unrolled", guess is not None
        tape = paths = None
        if not problem.options.recompute:
            tape = adjoints.Tape(problem, any(ctx.needs_input_grad[3:]), guessed)
        elif unrolled and problem.fine.info.kind == "fixed" and problem.fine.steps > 1:
            paths = adjoints.Paths(problem)
        sweep = solve_forward(problem, x0, guess, keep_levels=unrolled, tape=tape, paths=paths)
        ctx.problem, ctx.guessed, ctx.tape, ctx.paths = problem, guessed, tape, paths
        ctx.save_for_backward(sweep.states, *sweep.levels)
        return sweep.states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states: torch.Tensor):
        states, *levels = ctx.saved_tensors
        need_params = any(ctx.needs_input_grad[3:])
        grad_x0, param_grads = solve_backward(
            ctx.problem, states, levels, grad_states, ctx.guessed, need_params, ctx.tape,
            ctx.paths,
        )
        ctx.tape = ctx.paths = None  # free the graphs and step states
        if param_grads is None:
            param_grads = [None] * (len(ctx.needs_input_grad) - 3)
        return None, grad_x0 if ctx.needs_input_grad[1] else None, None, *param_grads
