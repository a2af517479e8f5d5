"""Parareal in time: the iteration, its discrete adjoint, and the autograd Function joining them.

Slices n = 0..N-1 cover [t_n, t_n+1] on a uniform grid; G_n and F_n solve across slice n.
Forward, from U_0 = x0 and U^0 the coarse sweep (or a warm-start guess):

    U^k_n+1 = G_n(U^k_n) + F_n(U^k-1_n) - G_n(U^k-1_n),    k = 1..K.

After k iterations U_0..U_k are the fine solution, bit for bit: where U_n did not change, the
two G terms cancel exactly and U_n+1 is taken as F_n(U_n), and fine solves whose input did not
change are not repeated, so iteration k solves only slices k-1..N-1 and K = N is the serial
fine solve. Backward solves the discrete adjoint of the fine propagators at the forward states,

    lambda_N = dL/dU_N,   lambda_n = (dF_n/dU_n)^T lambda_n+1 + dL/dU_n,

either as a sequential chain of VJPs (exact) or by the same parareal iteration backwards in time,
with VJPs of G_n as the coarse and (batched) VJPs of F_n as the fine propagator.

The work is split along three seams: ``fine_solve``/``fine_vjp`` (a set of slices, batched),
``coarse_step``/``_CoarseAdjoint`` (one slice) and ``residual`` (the convergence decision).
With a time group (``Problem.group``, a ``pnode_zoo.distributed.TimeGroup``) the same iteration
runs on each rank over its contiguous chunk of slices only: fine solves and VJPs of the chunk
(batched), the coarse sweep pipelined rank to rank (the boundary state entering the chunk is
received from the previous rank, the one leaving it sent to the next), the residual
max-all-reduced, and the chunks all-gathered at the end so every rank holds the whole
trajectory. The adjoint runs the same in reverse time (the reversed view of the group).

Gradients across ranks: parameters are replicated. Each rank's adjoint adds the fine VJPs of its
own slices only, so a per-slice parameter's gradient is nonzero only on its owner and a shared
one is a partial sum; the backward then sums the parameter gradients over the time group, so
every rank of it holds the full, identical gradient (each slice's share computed once, by its
owner), and lambda_0 (the gradient to x0) is the same on every rank.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from time import perf_counter
from typing import TYPE_CHECKING

import torch
from torch.autograd.function import once_differentiable

from pnode_zoo.ode.propagators import Propagator, Work
from pnode_zoo.ode.slices import SliceFields, Stacked, select
from pnode_zoo.ode.stats import PararealStats

if TYPE_CHECKING:
    from pnode_zoo.distributed.communicator import TimeGroup

BACKWARD_MODES = ("parareal", "serial")


@dataclass
class Problem:
    """Everything one call of a parareal block needs, frozen at call time.

    Args:
        fields: the slices' vector fields.
        coarse: G.
        fine: F.
        t0: start time.
        t1: end time.
        num_slices: N.
        max_iters: forward parareal iterations allowed (<= N).
        tol: forward stopping tolerance on ``residual``.
        backward: ``"parareal"`` or ``"serial"``.
        backward_max_iters: adjoint parareal iterations allowed (<= N).
        backward_tol: adjoint stopping tolerance.
        return_trajectory: whether the loss sees every boundary state (adjoint jumps).
        stats: where the call's statistics go.
        stacked: per-slice parameters and buffers stacked for this call (set by
            ``solve_forward``, reused by the backward pass); None for shared parameters.
        group: the time group whose ranks share the slices; None: this process solves all.
    """

    fields: SliceFields
    coarse: Propagator
    fine: Propagator
    t0: float
    t1: float
    num_slices: int
    max_iters: int
    tol: float
    backward: str
    backward_max_iters: int
    backward_tol: float
    return_trajectory: bool
    stats: PararealStats
    stacked: Stacked | None = None
    group: TimeGroup | None = None

    @property
    def span(self) -> float:
        return (self.t1 - self.t0) / self.num_slices

    def start(self, n: int) -> float:
        return self.t0 + n * (self.t1 - self.t0) / self.num_slices


# --- seams --------------------------------------------------------------------------------


def _solve_set(
    problem: Problem,
    propagator: Propagator,
    slices: range,
    states: torch.Tensor,
    selected: Stacked | None,
) -> tuple[torch.Tensor, Work, float]:
    """Propagate ``states[i]`` across slice ``slices[i]``, all in one batched solve."""
    groups, batch = len(slices), states.shape[1]
    starts = [problem.start(n) for n in slices]
    t_start = torch.tensor(starts, dtype=states.dtype, device=states.device)
    field = problem.fields.batch(slices, batch, selected)
    work, tic = Work(), perf_counter()
    out = propagator(
        field,
        t_start.repeat_interleave(batch),
        problem.span,
        states.reshape(groups * batch, *states.shape[2:]),
        work,
        groups,
    )
    return out.reshape(states.shape), work, perf_counter() - tic


def _solve_one(
    problem: Problem, n: int, state: torch.Tensor
) -> tuple[torch.Tensor, Work, float]:
    """Propagate ``state`` across slice n with G (no batching machinery)."""
    t_start = torch.tensor(problem.start(n), dtype=state.dtype, device=state.device)
    work, tic = Work(), perf_counter()
    out = problem.coarse(problem.fields.one(n), t_start, problem.span, state, work)
    return out, work, perf_counter() - tic


def fine_solve(problem: Problem, slices: range, states: torch.Tensor) -> torch.Tensor:
    """F_n(states[i]) for n = slices[i] (states stacked on dim 0), as one batched solve."""
    out, work, seconds = _solve_set(
        problem, problem.fine, slices, states, select(problem.stacked, slices)
    )
    problem.stats.record("forward", "fine", slices, work, seconds, work.nfe, batched=True)
    return out


def coarse_solve(problem: Problem, slices: range, states: torch.Tensor) -> torch.Tensor:
    """G_n(states[i]) for n = slices[i], as one batched solve (warm starts)."""
    out, work, seconds = _solve_set(
        problem, problem.coarse, slices, states, select(problem.stacked, slices)
    )
    problem.stats.record("forward", "coarse", slices, work, seconds, work.nfe, batched=True)
    return out


def coarse_step(problem: Problem, n: int, state: torch.Tensor) -> torch.Tensor:
    """G_n(state): one slice of the (sequential) coarse sweep."""
    out, work, seconds = _solve_one(problem, n, state)
    problem.stats.record("forward", "coarse", range(n, n + 1), work, seconds, work.nfe, False)
    return out


def residual(new: torch.Tensor, old: torch.Tensor) -> float:
    """Largest relative change max_n |new_n - old_n| / |new_n| over boundary states (dim 0)."""
    change = (new - old).flatten(1).norm(dim=1)
    size = new.flatten(1).norm(dim=1).clamp_min(torch.finfo(new.dtype).tiny)
    return (change / size).max().item()


class _ParamGrads:
    """Accumulates dL/dθ over fine VJPs and hands it back in ``SliceFields.parameters`` order."""

    def __init__(self, problem: Problem) -> None:
        self.fields = problem.fields
        if self.fields.per_slice:
            self.sums = {k: torch.zeros_like(v) for k, v in problem.stacked[0].items()}
        else:
            self.params = self.fields.parameters()
            self.sums = [torch.zeros_like(p) for p in self.params]

    def inputs(self, selected: Stacked | None) -> list[torch.Tensor]:
        return list(selected[0].values()) if self.fields.per_slice else self.params

    def add(self, slices: range, grads: tuple[torch.Tensor | None, ...]) -> None:
        sums = self.sums.values() if self.fields.per_slice else self.sums
        for total, grad in zip(sums, grads, strict=True):
            if grad is None:
                continue
            if self.fields.per_slice:
                total[slices.start : slices.stop] += grad
            else:
                total += grad

    def all_reduce(self, group: TimeGroup | None) -> None:
        """Sum over the time group: each rank has added the VJPs of its own slices only."""
        if group is not None:
            group.sum_(list(self.sums.values()) if self.fields.per_slice else self.sums)

    def result(self) -> list[torch.Tensor]:
        if not self.fields.per_slice:
            return self.sums
        return [
            self.sums[name][n]
            for n, module in enumerate(self.fields.modules)
            for name, p in module.named_parameters()
            if p.requires_grad
        ]


def fine_vjp(
    problem: Problem,
    slices: range,
    states: torch.Tensor,
    cotangents: torch.Tensor,
    *,
    wrt_state: bool,
    grads: _ParamGrads | None,
) -> torch.Tensor | None:
    """(dF_n/dU_n)^T cotangent for n in ``slices``, recomputing F in one batched solve.

    Args:
        problem: the call.
        slices: contiguous slices.
        states: their start states U_n, stacked on dim 0.
        cotangents: lambda_n+1 for each slice, stacked on dim 0.
        wrt_state: return the pull-back to the states (else None).
        grads: accumulator that also receives (dF_n/dθ)^T cotangent, or None.
    """
    return _fine_graph(problem, slices, states, wrt_state=wrt_state, grads=grads)(cotangents)


def _fine_graph(
    problem: Problem,
    slices: range,
    states: torch.Tensor,
    *,
    wrt_state: bool,
    grads: _ParamGrads | None,
) -> Callable[[torch.Tensor], torch.Tensor | None]:
    """Recompute F on ``slices`` keeping its graph; returns ``fine_vjp``'s pull-back through it.

    Split from ``fine_vjp`` so that a rank can recompute while its cotangents are on their way.
    """
    with torch.enable_grad():
        x = states.detach().requires_grad_(wrt_state)
        selected = select(problem.stacked, slices)
        if selected is not None and grads is not None:
            params = {k: v.detach().requires_grad_() for k, v in selected[0].items()}
            selected = params, selected[1]
        out, work, seconds = _solve_set(problem, problem.fine, slices, x, selected)
    inputs = ([x] if wrt_state else []) + (grads.inputs(selected) if grads else [])

    def pull(cotangents: torch.Tensor) -> torch.Tensor | None:
        tic = perf_counter()
        pulled = torch.autograd.grad(out, inputs, cotangents, allow_unused=True)
        total = seconds + perf_counter() - tic
        problem.stats.record("backward", "fine", slices, work, total, 2 * work.nfe, batched=True)
        if grads is not None:
            grads.add(slices, pulled[1:] if wrt_state else pulled)
        return pulled[0] if wrt_state else None

    return pull


class _CoarseAdjoint:
    """mu -> (dG_n/dU_n)^T mu at the forward states; each slice's graph is built once."""

    def __init__(self, problem: Problem, states: torch.Tensor) -> None:
        self.problem, self.states = problem, states
        self.graphs: dict[int, tuple[torch.Tensor, torch.Tensor, int]] = {}

    def __call__(self, n: int, cotangent: torch.Tensor) -> torch.Tensor:
        work, seconds = Work(), 0.0
        if n not in self.graphs:
            with torch.enable_grad():
                x = self.states[n].detach().requires_grad_()
                y, work, seconds = _solve_one(self.problem, n, x)
            self.graphs[n] = x, y, work.nfe
        x, y, nfe = self.graphs[n]
        tic = perf_counter()
        (pulled,) = torch.autograd.grad(y, x, cotangent, retain_graph=True)
        seconds += perf_counter() - tic
        stats, units = self.problem.stats, work.nfe + nfe
        stats.record("backward", "coarse", range(n, n + 1), work, seconds, units, batched=False)
        return pulled


# --- the iteration ------------------------------------------------------------------------


def _iterate(
    u0: torch.Tensor,
    fine: Callable[[range, torch.Tensor], torch.Tensor],
    coarse: Callable[[int, torch.Tensor], torch.Tensor],
    *,
    num_slices: int,
    max_iters: int,
    tol: float,
    where: Callable[[int, int], str],
    guess: torch.Tensor | None = None,
    coarse_batch: Callable[[range, torch.Tensor], torch.Tensor] | None = None,
    source: torch.Tensor | None = None,
    linear: bool = False,
    group: TimeGroup | None = None,
) -> tuple[torch.Tensor, list[float]]:
    """Parareal for U_n+1 = P_n(U_n) + source_n+1, U_0 = u0; returns U [N+1, ...], residuals.

    Args:
        u0: the state at boundary 0.
        fine: fine propagation of a set of slices (batched).
        coarse: coarse propagation of one slice.
        num_slices: N.
        max_iters: iterations allowed (clamped to N).
        tol: stop once ``residual`` is below it.
        where: (boundary, iteration) -> where a non-finite state was found, for the error.
        guess: U^0 instead of the coarse sweep (its row 0 is ignored); needs ``coarse_batch``.
        coarse_batch: batched coarse propagation, for the G terms of a guess.
        source: terms added at each boundary (row 0 is ignored; include it in u0).
        linear: the propagators are linear, so G(a) - G(b) is computed as G(a - b) and no
            coarse values need keeping.
        group: solve only this rank's chunk of slices and exchange with the group's other
            ranks (None: all slices here). Every rank gets the whole U and the same residuals.
    """
    n_slices = num_slices
    own = range(n_slices) if group is None else group.chunk(n_slices)
    lo, hi = own.start, own.stop
    states = u0.new_empty((n_slices + 1, *u0.shape))
    states[0] = u0
    coarse_old = None if linear else u0.new_empty((n_slices, *u0.shape))
    if guess is not None:
        states[1:] = guess[1:]
        coarse_old[lo:hi] = coarse_batch(own, states[lo:hi])
    else:
        if lo > 0:
            states[lo] = group.recv_prev(u0)
        for n in own:
            value = coarse(n, states[n])
            if coarse_old is not None:
                coarse_old[n] = value
            states[n + 1] = value if source is None else value + source[n + 1]
        if hi < n_slices:
            group.send_next(states[hi])
    finite = bool(torch.isfinite(states[lo + 1 : hi + 1]).all())
    if group is not None:
        finite = group.max(float(not finite)) == 0.0
    if not finite:
        _check_finite(_gather(states, own, group), 1, 0, where)
    residuals: list[float] = []
    for k in range(1, min(max_iters, n_slices) + 1):
        # Slices before k-1 have converged; boundary lo changes (and arrives) only if lo >= k.
        first, changed = max(lo, k - 1), max(lo, k)
        old = states[changed : hi + 1].clone()
        fine_values = fine(range(first, hi), states[first:hi]) if first < hi else None
        if lo >= k:
            states[lo] = group.recv_prev(u0)
        for n in range(first, hi):
            value = fine_values[n - first]
            if n >= k and linear:
                value = value + coarse(n, states[n] - old[n - changed])
            elif n >= k:
                new = coarse(n, states[n])
                value = new + value - coarse_old[n]
                coarse_old[n] = new
            states[n + 1] = value if source is None else value + source[n + 1]
        if k <= hi < n_slices:
            group.send_next(states[hi])
        mine = max(lo + 1, k)  # boundaries this rank computed in this iteration
        change = residual(states[mine : hi + 1], old[mine - changed :]) if mine <= hi else 0.0
        residuals.append(change if group is None else group.max(change))
        if not math.isfinite(residuals[-1]):
            _check_finite(_gather(states, own, group), k, k, where)
        if residuals[-1] < tol:
            break
    return _gather(states, own, group), residuals


def _gather(states: torch.Tensor, own: range, group: TimeGroup | None) -> torch.Tensor:
    """``states`` with every rank's boundaries filled in (rows own.start+1..own.stop are ours)."""
    if group is not None:
        states[1:] = group.all_gather(states[own.start + 1 : own.stop + 1])
    return states


def _check_finite(states: torch.Tensor, first: int, iteration: int, where) -> None:
    bad = ~torch.isfinite(states[first:]).flatten(1).all(dim=1)
    if bad.any():
        boundary = first + int(bad.nonzero()[0, 0])
        raise FloatingPointError(where(boundary, iteration))


def solve_forward(
    problem: Problem, x0: torch.Tensor, guess: torch.Tensor | None = None
) -> torch.Tensor:
    """The parareal states U [N+1, *x0.shape] from x0 (or from a guess of them)."""
    problem.stacked = problem.fields.stack()

    def where(boundary: int, iteration: int) -> str:
        return (
            f"non-finite state at the end of slice {boundary - 1} "
            f"(t={problem.start(boundary):.6g}) in forward parareal iteration {iteration}"
        )

    with _communication(problem):
        states, residuals = _iterate(
            x0,
            lambda slices, x: fine_solve(problem, slices, x),
            lambda n, x: coarse_step(problem, n, x),
            num_slices=problem.num_slices,
            max_iters=problem.max_iters,
            tol=problem.tol,
            where=where,
            guess=guess,
            coarse_batch=lambda slices, x: coarse_solve(problem, slices, x),
            group=problem.group,
        )
    problem.stats.forward_iters = len(residuals)
    problem.stats.forward_residuals = residuals
    return states


def solve_adjoint(
    problem: Problem, states: torch.Tensor, grad_states: torch.Tensor, need_params: bool
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """lambda_0 and (if asked) dL/dθ from dL/dU, at the forward states U.

    Args:
        problem: the call.
        states: the forward states U [N+1, ...].
        grad_states: dL/dU [N+1, ...] (only row N is used without trajectory output).
        need_params: also return dL/dθ in ``SliceFields.parameters`` order.
    """
    with _communication(problem):
        lam, grads = _adjoint(problem, states, grad_states, need_params)
        if grads is not None:
            grads.all_reduce(problem.group)
    return lam, grads.result() if grads else None


@contextmanager
def _communication(problem: Problem) -> Iterator[None]:
    """Add the time group's communication and wait time inside the block to the stats."""
    group = problem.group
    before = dict(group.seconds) if group is not None else {}
    try:
        yield
    finally:
        if group is not None:
            problem.stats.time_comm += group.seconds["comm"] - before["comm"]
            problem.stats.time_wait += group.seconds["wait"] - before["wait"]


def _adjoint(
    problem: Problem, states: torch.Tensor, grad_states: torch.Tensor, need_params: bool
) -> tuple[torch.Tensor, _ParamGrads | None]:
    """``solve_adjoint`` before the parameter gradients are summed over the time group."""
    n_slices, group = problem.num_slices, problem.group
    own = range(n_slices) if group is None else group.chunk(n_slices)
    grads = _ParamGrads(problem) if need_params else None
    jumps = grad_states if problem.return_trajectory else None
    if problem.backward == "serial":
        backwards = None if group is None else group.reversed()
        bad = -1  # the last slice whose adjoint is non-finite; ranks stay in step until told
        for n in reversed(own):
            pull = _fine_graph(
                problem, range(n, n + 1), states[n : n + 1], wrt_state=True, grads=grads
            )
            if n == own.stop - 1:  # F_n was recomputed while lambda_n+1 was on its way
                last = own.stop == n_slices
                lam = grad_states[n_slices] if last else backwards.recv_prev(states[0])
            pulled = pull(lam[None])
            lam = pulled[0] if jumps is None else pulled[0] + jumps[n]
            if bad < 0 and not torch.isfinite(lam).all():
                bad = n
                if group is None:
                    break
        if group is not None:
            if own.start > 0:
                backwards.send_next(lam)
            bad = int(group.max(bad))
            lam = group.broadcast(lam, 0)
        if bad >= 0:
            raise FloatingPointError(
                f"non-finite adjoint at the start of slice {bad} in the serial backward"
            )
        return lam, grads

    def fine(slices: range, cotangents: torch.Tensor) -> torch.Tensor:
        # Iteration index j runs backwards in time: boundary j holds lambda_(N-j).
        owned = range(n_slices - slices.stop, n_slices - slices.start)
        pulled = fine_vjp(
            problem, owned, states[owned.start : owned.stop], cotangents.flip(0),
            wrt_state=True, grads=None,
        )
        return pulled.flip(0)

    coarse_adjoint = _CoarseAdjoint(problem, states)

    def where(boundary: int, iteration: int) -> str:
        return (
            f"non-finite adjoint at the start of slice {n_slices - boundary} "
            f"in backward parareal iteration {iteration}"
        )

    lams, residuals = _iterate(
        grad_states[n_slices],
        fine,
        lambda j, mu: coarse_adjoint(n_slices - 1 - j, mu),
        num_slices=n_slices,
        max_iters=problem.backward_max_iters,
        tol=problem.backward_tol,
        where=where,
        source=None if jumps is None else jumps.flip(0),
        linear=True,
        group=None if group is None else group.reversed(),
    )
    problem.stats.backward_iters = len(residuals)
    problem.stats.backward_residuals = residuals
    lams = lams.flip(0)
    if grads is not None:
        fine_vjp(
            problem, own, states[own.start : own.stop], lams[own.start + 1 : own.stop + 1],
            wrt_state=False, grads=grads,
        )
    return lams[0], grads


class _PararealFunction(torch.autograd.Function):
    """x0, θ -> U; backward by the discrete adjoint (θ are inputs, as in torchdiffeq)."""

    @staticmethod
    def forward(ctx, problem: Problem, x0: torch.Tensor, guess, *params: torch.Tensor):
        states = solve_forward(problem, x0, guess)
        ctx.problem = problem
        ctx.save_for_backward(states)
        return states

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_states: torch.Tensor):
        (states,) = ctx.saved_tensors
        need_params = any(ctx.needs_input_grad[3:])
        grad_x0, param_grads = solve_adjoint(ctx.problem, states, grad_states, need_params)
        if param_grads is None:
            param_grads = [None] * (len(ctx.needs_input_grad) - 3)
        return None, grad_x0 if ctx.needs_input_grad[1] else None, None, *param_grads


def parareal(problem: Problem, x0: torch.Tensor, guess: torch.Tensor | None = None) -> torch.Tensor:
    """The parareal states U [N+1, *x0.shape], differentiable in x0 and the fields' parameters.

    Without anything to differentiate (``torch.no_grad()``, frozen parameters and x0) no graph
    and no states are kept.
    """
    params = problem.fields.parameters()
    if torch.is_grad_enabled() and (x0.requires_grad or params):
        return _PararealFunction.apply(problem, x0, guess, *params)
    with torch.no_grad():
        return solve_forward(problem, x0, guess)
