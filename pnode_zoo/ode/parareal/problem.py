"""One call of a parareal solve, frozen, and the seams every algorithm is built from.

A ``Problem`` holds what a call needs (fields, propagators, the slices' times, options, the
time group) and never changes during the call; the per-slice parameters are stacked once, when
it is made. The seams: ``fine_solve`` (a set of slices in one batched solve), ``coarse_step``
(one slice of the sequential sweep), ``coarse_solve`` (a set of slices, batched) and
``Linearization`` (either propagator run with autograd on, for its vector-Jacobian products).
Each records its work, wall time and cost-model units in the call's ``PararealStats``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import torch
from torch.profiler import record_function

from pnode_zoo.distributed.communicator import clock
from pnode_zoo.ode.options import PararealOptions
from pnode_zoo.ode.propagators import Propagator, Work
from pnode_zoo.ode.slices import SliceFields, Stacked, select
from pnode_zoo.ode.stats import PararealStats

if TYPE_CHECKING:
    from pnode_zoo.distributed.communicator import TimeGroup

__all__ = [
    "Linearization",
    "ParamGrads",
    "Problem",
    "REBUILT_STEPS",
    "coarse_solve",
    "coarse_step",
    "fine_solve",
    "make_problem",
]

T = TypeVar("T")

#: Steps whose graphs a step-wise pull-back rebuilds at once. One at a time pays a solver call
#: and an autograd launch per step (about a tenth of the backward's time for a small MLP field);
#: four hold four steps' graphs, the same whatever the number of steps.
REBUILT_STEPS = 4


@dataclass(frozen=True)
class Problem:
    """Everything one call of a parareal solve needs, fixed for the call.

    Args:
        fields: the slices' vector fields.
        options: the solve's options (``num_slices`` resolved).
        coarse: G.
        fine: F.
        starts: start time of every slice, [N], in x0's dtype and on its device.
        spans: length of every slice, [N].
        stats: where the call's statistics go.
        stacked: per-slice parameters and buffers stacked for this call; None when shared.
        group: the time group whose ranks share the slices; None: this process solves all.
        return_trajectory: whether the caller sees every boundary state.
        coarse_fields: the fields G solves, when the coarse model is not the fine one (it must
            depend on the parameters only through ``fields``' parameters); None: ``fields``.
    """

    fields: SliceFields
    options: PararealOptions
    coarse: Propagator
    fine: Propagator
    starts: torch.Tensor
    spans: torch.Tensor
    stats: PararealStats
    stacked: Stacked | None
    group: TimeGroup | None
    return_trajectory: bool
    coarse_fields: SliceFields | None = None

    @property
    def num_slices(self) -> int:
        return len(self.starts)

    @property
    def max_iters(self) -> int:
        """Forward iterations allowed, clamped to N."""
        cap = self.options.max_iters
        return self.num_slices if cap is None else min(cap, self.num_slices)

    @property
    def backward_max_iters(self) -> int:
        """Adjoint iterations allowed (``"parareal_adjoint"``), clamped to N."""
        cap = self.options.backward_max_iters
        return self.num_slices if cap is None else min(cap, self.num_slices)

    @property
    def backward_tol(self) -> float:
        tol = self.options.backward_tol
        return self.options.tol if tol is None else tol

    @property
    def own(self) -> range:
        """The slices this process solves: all, or its rank's contiguous chunk."""
        n = self.num_slices
        return range(n) if self.group is None else self.group.chunk(n)

    def where(self, boundary: int) -> str:
        """Slice and time of a boundary, for error messages."""
        n = min(boundary, self.num_slices) - 1
        return f"slice {n} (t={float(self.starts[n] + self.spans[n]):.6g})"


def make_problem(
    fields: SliceFields,
    times: torch.Tensor,
    options: PararealOptions,
    x0: torch.Tensor,
    group: TimeGroup | None = None,
    return_trajectory: bool = False,
    coarse_fields: SliceFields | None = None,
) -> Problem:
    """Freeze one call: slice times on x0's device and dtype, per-slice parameters stacked.

    Args:
        fields: the slices' vector fields.
        times: the N+1 slice boundaries, strictly increasing.
        options: the solve's options.
        x0: the initial state (sets dtype and device).
        group: the time group, or None.
        return_trajectory: whether the caller sees every boundary state.
        coarse_fields: the fields of G when they are not ``fields`` (a cheaper coarse model).
    """
    n = len(times) - 1
    if group is not None and n % group.size:
        raise ValueError(f"num_slices={n} is not divisible by the time group size {group.size}")
    grid = times.to(dtype=torch.float64)
    stats = PararealStats(num_slices=n, tol=float(options.tol))
    if group is not None:
        stats.rank, stats.ranks = group.index, group.size
    return Problem(
        fields=fields,
        options=options,
        coarse=options.propagator("coarse"),
        fine=options.propagator("fine"),
        starts=grid[:-1].to(dtype=x0.dtype, device=x0.device),
        spans=grid.diff().to(dtype=x0.dtype, device=x0.device),
        stats=stats,
        stacked=fields.stack(),
        group=group,
        return_trajectory=return_trajectory,
        coarse_fields=coarse_fields,
    )


def _propagate(
    problem: Problem,
    propagator: Propagator,
    slices: range,
    states: torch.Tensor,
    selected: Stacked | None,
    steps: range | None = None,
) -> tuple[torch.Tensor, Work, tuple[float, float]]:
    """Propagate ``states[i]`` across slice ``slices[i]``, all in one solve; (out, work, when).
    With ``steps`` (fixed-step methods), only those steps, and the state after each."""
    cut = slice(slices.start, slices.stop)
    fields = problem.fields
    if propagator is problem.coarse and problem.coarse_fields is not None:
        fields = problem.coarse_fields
    work, start = Work(), clock(states.device)
    flat = states.reshape(len(slices) * states.shape[1], *states.shape[2:])
    shape = states.shape if steps is None else (len(steps), *states.shape)

    def run() -> torch.Tensor:
        field = fields.field(slices, states.shape[1], selected)
        with record_function(f"parareal/{propagator.name}"):  # a range in torch.profiler traces
            out = propagator(field, problem.starts[cut], problem.spans[cut], flat, work, steps)
        return out.reshape(shape)

    out = _attempt(problem, run, lambda: states.new_zeros(shape))
    return out, work, (start, clock(states.device))


def _attempt(problem: Problem, compute: Callable[[], T], stand_in: Callable[[], T]) -> T:
    """``compute()`` alone, or, on a time group, so that an exception in it is agreed by every
    rank at the next all-reduce (``TimeGroup.attempt``) instead of leaving them waiting."""
    return compute() if problem.group is None else problem.group.attempt(compute, stand_in)


def _stacked(problem: Problem, slices: range, batched: bool) -> Stacked | None:
    """Per-slice parameters for a solve of ``slices`` (None: call a single module directly)."""
    return select(problem.stacked, slices) if batched or len(slices) > 1 else None


def fine_solve(
    problem: Problem, slices: range, states: torch.Tensor, path: bool = False
) -> torch.Tensor:
    """F_n(states[i]) for n = slices[i] (states stacked on dim 0), as one batched solve; with
    ``path`` (fixed-step F only) the state after every step, [steps, *states.shape]."""
    steps = range(problem.fine.steps) if path else None
    out, work, when = _propagate(
        problem, problem.fine, slices, states, _stacked(problem, slices, batched=True), steps
    )
    problem.stats.record("forward", "fine", slices, work, [when], work.nfe, batched=True)
    return out


def coarse_solve(problem: Problem, slices: range, states: torch.Tensor) -> torch.Tensor:
    """G_n(states[i]) for n = slices[i], as one batched solve (for a warm start)."""
    out, work, when = _propagate(
        problem, problem.coarse, slices, states, _stacked(problem, slices, batched=True)
    )
    problem.stats.record("forward", "coarse", slices, work, [when], work.nfe, batched=True)
    return out


def coarse_step(problem: Problem, n: int, state: torch.Tensor) -> torch.Tensor:
    """G_n(state): one slice of the sequential coarse sweep."""
    one = range(n, n + 1)
    out, work, when = _propagate(problem, problem.coarse, one, state[None], None)
    problem.stats.record("forward", "coarse", one, work, [when], work.nfe, batched=False)
    return out[0]


class Linearization:
    """One propagator run with autograd on, for vector-Jacobian products through it.

    Built in the backward pass (a re-run at saved states), or in the forward pass when the
    graphs are kept (``PararealOptions.recompute`` off). A re-run of a fixed-step method with
    several steps keeps no graph: it saves the state after every step and a pull-back rebuilds
    the graphs of ``REBUILT_STEPS`` steps at a time, last steps first, so memory holds the step
    states and those few steps' graphs, not the whole solve's. Given the step states the
    forward pass already computed (``path``), nothing is re-run: the pull-back rebuilds its
    steps from them. The run is recorded in the stats on construction, each pull-back when it
    happens.

    Args:
        problem: the call.
        kind: ``"fine"`` or ``"coarse"``.
        slices: contiguous slices.
        states: their start states, stacked on dim 0.
        wrt_state: pull-backs return the cotangents of the states.
        wrt_params: pull-backs also give the parameters' gradients.
        batched: how the cost model counts it (batched across slices, or sequential).
        phase: ``"backward"`` for a re-run, ``"forward"`` for a run of the forward pass.
        path: the run's step states from the forward pass (``fine_solve(..., path=True)`` of
            these ``states``), instead of a re-run.
    """

    def __init__(
        self,
        problem: Problem,
        kind: str,
        slices: range,
        states: torch.Tensor,
        *,
        wrt_state: bool,
        wrt_params: bool,
        batched: bool = True,
        phase: str = "backward",
        path: torch.Tensor | None = None,
    ) -> None:
        self.problem, self.kind, self.slices, self.batched = problem, kind, slices, batched
        self.wrt_state, self.wrt_params = wrt_state, wrt_params
        self.propagator = propagator = problem.fine if kind == "fine" else problem.coarse
        selected = _stacked(problem, slices, batched or wrt_params)
        if selected is not None and wrt_params:
            params = {k: v.detach().requires_grad_() for k, v in selected[0].items()}
            selected = params, selected[1]
        self.selected = selected
        self.params: list[torch.Tensor] = []
        if wrt_params:
            fields = problem.fields
            self.params = list(selected[0].values()) if fields.per_slice else fields.parameters()
        # A kept graph (forward phase) saves its input; the forward writes the states' buffer
        # in place afterwards, so the input must not share that buffer's storage.
        self.start = states.detach().clone() if phase == "forward" else states.detach()
        fixed_steps = propagator.info.kind == "fixed" and propagator.steps > 1
        self.stepwise = path is not None or (phase == "backward" and fixed_steps)
        if path is not None:
            self.nfe, self.path, self.value = None, path, path[-1]  # nfe: see ``pull``
            return
        with torch.set_grad_enabled(not self.stepwise):
            x = self.start.requires_grad_(wrt_state and not self.stepwise)
            out, work, when = _propagate(problem, propagator, slices, x, selected,
                                         range(propagator.steps) if self.stepwise else None)
        self.nfe = work.nfe
        problem.stats.record(phase, kind, slices, work, [when], work.nfe, batched)
        if self.stepwise:
            self.path, self.value = out, out[-1]
        else:
            self.out, self.value = out, out.detach()
            self.inputs = ([x] if wrt_state else []) + self.params

    def pull(
        self, cotangents: torch.Tensor, grads: ParamGrads | None = None, keep: bool = False
    ) -> torch.Tensor | None:
        """(dP_n/dU_n)^T cotangents (None unless ``wrt_state``); (dP_n/dθ)^T cotangents is
        added to ``grads`` when given.

        Args:
            cotangents: one per slice, stacked on dim 0.
            grads: accumulator of the parameter gradients (needs ``wrt_params``), or None.
            keep: keep the graph for further pull-backs.
        """
        return _attempt(self.problem, lambda: self._pull(cotangents, grads, keep),
                        lambda: torch.zeros_like(cotangents) if self.wrt_state else None)

    def _pull(
        self, cotangents: torch.Tensor, grads: ParamGrads | None, keep: bool
    ) -> torch.Tensor | None:
        device = cotangents.device
        tic = clock(device)
        with record_function(f"parareal/{self.kind}"):  # VJPs count as the propagator's time
            if self.stepwise:
                pulled, work = self._pull_by_steps(cotangents)
            else:
                pulled = torch.autograd.grad(self.out, self.inputs, cotangents,
                                             retain_graph=keep, allow_unused=True)
                work = Work()
        # an f-VJP per evaluation of the run (a kept path's run took the steps its rebuild
        # took), and the evaluations of a step-wise pull-back's rebuilt graphs
        units = (work.nfe if self.nfe is None else self.nfe) + work.nfe
        self.problem.stats.record("backward", self.kind, self.slices, work,
                                  [(tic, clock(device))], units, self.batched)
        if grads is not None:
            grads.add(self.slices, pulled[1:] if self.wrt_state else pulled)
        return pulled[0] if self.wrt_state else None

    def _pull_by_steps(
        self, cotangents: torch.Tensor
    ) -> tuple[tuple[torch.Tensor | None, ...], Work]:
        """The pull-back a few steps at a time, from the saved step states, last steps first."""
        work, total = Work(), [None] * len(self.params)
        for stop in range(self.propagator.steps, 0, -REBUILT_STEPS):
            first = max(stop - REBUILT_STEPS, 0)
            start = self.start if first == 0 else self.path[first - 1]
            need_state = first > 0 or self.wrt_state
            with torch.enable_grad():
                x = start.requires_grad_(need_state)
                out, done, _ = _propagate(self.problem, self.propagator, self.slices, x,
                                          self.selected, range(first, stop))
                inputs = ([x] if need_state else []) + self.params
                pulled = torch.autograd.grad(out[-1], inputs, cotangents, allow_unused=True)
            work.nfe += done.nfe
            if need_state:
                cotangents, pulled = pulled[0], pulled[1:]
            total = [g if t is None else t if g is None else t + g
                     for t, g in zip(total, pulled, strict=True)]
        return ((cotangents,) if self.wrt_state else ()) + tuple(total), work


class ParamGrads:
    """Accumulates dL/dθ over VJPs and hands it back in ``SliceFields.parameters`` order."""

    def __init__(self, problem: Problem) -> None:
        self.fields = problem.fields
        if self.fields.per_slice:
            self.sums = {k: torch.zeros_like(v) for k, v in problem.stacked[0].items()}
        else:
            self.params = self.fields.parameters()
            self.sums = [torch.zeros_like(p) for p in self.params]

    def add(self, slices: range, grads: tuple[torch.Tensor | None, ...]) -> None:
        sums = self.sums.values() if self.fields.per_slice else self.sums
        for total, grad in zip(sums, grads, strict=True):
            if grad is None:
                continue
            if self.fields.per_slice:
                total[slices.start : slices.stop] += grad
            else:
                total += grad

    @property
    def tensors(self) -> list[torch.Tensor]:
        """The sums, to all-reduce over the time group: each rank has added the VJPs of its
        own slices only."""
        return list(self.sums.values()) if self.fields.per_slice else self.sums

    def result(self) -> list[torch.Tensor]:
        if not self.fields.per_slice:
            return self.sums
        return [
            self.sums[name][n]
            for n, module in enumerate(self.fields.modules)
            for name, p in module.named_parameters()
            if p.requires_grad
        ]
