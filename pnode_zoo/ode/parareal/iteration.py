"""The parareal iteration, on one process or on one rank's chunk of slices.

For U_n+1 = P_n(U_n) + s_n+1, U_0 = u0, with a coarse propagator G and a fine one F of P:

    U^0_n+1 = G_n(U^0_n) + s_n+1                         (the coarse sweep, or a guess)
    U^k_n+1 = G_n(U^k_n) + F_n(U^k-1_n) - G_n(U^k-1_n) + s_n+1,    k = 1..K.

After k iterations U_0..U_k are the fine solution bit for bit: slices before k-1 are not
solved again, and slice k-1, whose start did not change, takes U^k_k = F_k-1(U^k-1_k-1) with
no coarse terms. So iteration k solves slices k-1..N-1 and K = N is the serial fine solve.
The forward pass uses it with s = 0; the parareal adjoint with linear propagators (VJPs), for
which G(a) - G(b) is computed as G(a - b), and the loss's direct terms as s.

With a time group each rank runs the same loop over its own chunk: the fine solves of the
chunk in one batched call, the coarse sweep pipelined (the state entering the chunk received
from the previous rank, the one leaving it sent to the next), the residual max-all-reduced,
and the chunks all-gathered at the end. The residual's all-reduce after every iteration makes
each iteration wait for the whole chain of coarse corrections (the classic schedule); a fixed
K needs no decision on the way, so it can reduce all residuals once at the end and let each
rank start its next fine solve as soon as its own corrections are sent (the pipelined one).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from pnode_zoo.distributed.communicator import TimeGroup

__all__ = ["CoarseStep", "FineSet", "Sweep", "Where", "iterate", "residual"]

FineSet = Callable[[range, torch.Tensor], torch.Tensor]
CoarseStep = Callable[[int, torch.Tensor], torch.Tensor]
Where = Callable[[int, int], str]


@dataclass
class Sweep:
    """The result of ``iterate``.

    Attributes:
        states: U^K at every boundary, [N+1, ...] (every rank's rows filled in).
        residuals: per iteration, the largest relative change of a boundary state.
        levels: U^0..U^K when kept (with a time group only this rank's rows lo..hi are set).
    """

    states: torch.Tensor
    residuals: list[float]
    levels: list[torch.Tensor] = field(default_factory=list)


def residual(new: torch.Tensor, old: torch.Tensor) -> float:
    """Largest relative change max_n |new_n - old_n| / |new_n| over boundary states (dim 0)."""
    change = (new - old).flatten(1).norm(dim=1)
    size = new.flatten(1).norm(dim=1).clamp_min(torch.finfo(new.dtype).tiny)
    return (change / size).max().item()


def iterate(
    u0: torch.Tensor,
    fine: FineSet,
    coarse: CoarseStep,
    *,
    num_slices: int,
    max_iters: int,
    tol: float,
    where: Where,
    group: TimeGroup | None = None,
    guess: torch.Tensor | None = None,
    coarse_set: FineSet | None = None,
    source: torch.Tensor | None = None,
    linear: bool = False,
    keep_levels: bool = False,
    last_only: bool = False,
    agree_each_iteration: bool = True,
) -> Sweep:
    """Run parareal until the residual is below ``tol`` or ``max_iters`` iterations.

    Args:
        u0: the state at boundary 0.
        fine: fine propagation of a contiguous set of slices, batched.
        coarse: coarse propagation of one slice.
        num_slices: N.
        max_iters: iterations allowed (clamped to N).
        tol: stop once ``residual`` is below it.
        where: (boundary, iteration) -> where a non-finite state was found, for the error.
        group: solve only this rank's chunk and exchange with the other ranks (None: all).
        guess: U^0 instead of the coarse sweep (row 0 is ignored); needs ``coarse_set``.
        coarse_set: batched coarse propagation, for the coarse terms of a guess.
        source: terms s added at each boundary (row 0 is ignored: include it in u0).
        linear: the propagators are linear, so no coarse values need keeping.
        keep_levels: also return U^k of every iteration (for the unrolled gradient).
        last_only: with a time group, hand every rank only U_N (one broadcast instead of the
            all-gather of every boundary; other ranks' rows are left zero).
        agree_each_iteration: with a time group, all-reduce the residual (to stop, or to fail
            on a non-finite state) after the sweep and after every iteration. False: once,
            after the last, which needs ``tol`` 0 (no rank may stop on its own). Only for
            propagators that a non-finite state cannot make raise (explicit fixed-step ones):
            the other ranks would wait for a rank that failed until the group's timeout.
    """
    if not agree_each_iteration and tol > 0:
        raise ValueError("agree_each_iteration=False needs tol=0: ranks must stop together")
    run = _Run(u0, fine, coarse, num_slices, group, source, linear, where,
               defer_checks=group is not None and not agree_each_iteration)
    run.start(guess, coarse_set)
    levels = [run.states.clone()] if keep_levels else []
    run.level0 = levels[0] if keep_levels else None
    residuals: list[float] = []
    for k in range(1, min(max_iters, num_slices) + 1):
        residuals.append(run.iteration(k))
        if keep_levels:
            levels.append(run.states.clone())
        if residuals[-1] < tol:
            break
    run.finish_sweep()  # K = 0: the coarse sweep is the answer
    states, residuals = run.finish(residuals, last_only)
    return Sweep(states, residuals, levels)


class _Run:
    """The states of one parareal run on this process's chunk of slices."""

    def __init__(self, u0, fine, coarse, num_slices, group, source, linear, where,
                 defer_checks=False) -> None:
        self.fine, self.coarse, self.group, self.where = fine, coarse, group, where
        # checks deferred to ``agree``: (iteration, boundary) of this rank's first non-finite
        self.defer_checks, self.first_bad = defer_checks, None
        self.n, self.source = num_slices, source
        own = range(num_slices) if group is None else group.chunk(num_slices)
        self.lo, self.hi = own.start, own.stop
        self.u0 = u0
        self.states = u0.new_zeros((num_slices + 1, *u0.shape))
        self.states[0] = u0
        # G_n(U^k-1_n), kept for the correction (a linear G is applied to differences instead)
        self.coarse_old = None if linear else u0.new_empty((num_slices, *u0.shape))
        # the coarse sweep's last step, when it waits for the first fine solve (``start``)
        self.deferred = False
        self.level0: torch.Tensor | None = None  # U^0 as kept for the unrolled gradient

    def _set(self, n: int, value: torch.Tensor) -> None:
        self.states[n + 1] = value if self.source is None else value + self.source[n + 1]

    def start(self, guess: torch.Tensor | None, coarse_set: FineSet | None) -> None:
        """U^0: the coarse sweep (pipelined across ranks), or the guess."""
        lo, hi, states = self.lo, self.hi, self.states
        if guess is not None:
            states[1:] = guess[1:]
            self.coarse_old[lo:hi] = coarse_set(range(lo, hi), states[lo:hi])
        else:
            if lo > 0:
                states[lo] = self.group.recv_prev(self.u0)
            # On the last rank, G of the last slice feeds only that rank's first correction:
            # with no agreement after the sweep it waits until the first fine solve has run,
            # so that solve starts one coarse step sooner (the fine solves are the critical
            # path; the correction waits for the previous rank's fine result anyway).
            self.deferred = self.defer_checks and hi == self.n and hi > lo
            for n in range(lo, hi - int(self.deferred)):
                self._coarse_sweep_step(n)
            if hi < self.n:
                self.group.send_next(states[hi])
        swept = hi - int(self.deferred)
        bad = float(not torch.isfinite(states[lo + 1 : swept + 1]).all())
        if self.defer_checks:
            if bad:
                self._note_non_finite(0, lo + 1)
        elif (bad if self.group is None else self.group.max(bad)) > 0:
            self._raise_non_finite(1, 0)

    def iteration(self, k: int) -> float:
        """Iteration k; returns the residual (the same on every rank)."""
        lo, hi, states = self.lo, self.hi, self.states
        # Slices before k-1 have converged; boundary lo changes (and arrives) only if lo >= k.
        first, changed = max(lo, k - 1), max(lo, k)
        fine_values = self.fine(range(first, hi), states[first:hi]) if first < hi else None
        self.finish_sweep()
        old = states[changed : hi + 1].clone()
        if lo >= k:
            states[lo] = self.group.recv_prev(self.u0)
        for n in range(first, hi):
            value = fine_values[n - first]
            if n >= k and self.coarse_old is None:
                value = value + self.coarse(n, states[n] - old[n - changed])
            elif n >= k:
                new = self.coarse(n, states[n])
                value = new + value - self.coarse_old[n]
                self.coarse_old[n] = new
            self._set(n, value)
        if k <= hi < self.n:
            self.group.send_next(states[hi])
        mine = max(lo + 1, k)  # boundaries this rank computed in this iteration
        change = residual(states[mine : hi + 1], old[mine - changed :]) if mine <= hi else 0.0
        if self.defer_checks:
            if not math.isfinite(change):
                self._note_non_finite(k, mine)
            return change
        change = change if self.group is None else self.group.max(change)
        if not math.isfinite(change):
            self._raise_non_finite(k, k)
        return change

    def _coarse_sweep_step(self, n: int) -> None:
        value = self.coarse(n, self.states[n])
        if self.coarse_old is not None:
            self.coarse_old[n] = value
        self._set(n, value)

    def finish_sweep(self) -> None:
        """The coarse sweep's deferred last step, if ``start`` left it (U^0_n before any
        correction: call it before boundary lo is received again)."""
        if not self.deferred:
            return
        self.deferred = False
        self._coarse_sweep_step(self.hi - 1)
        if self.level0 is not None:
            self.level0[self.hi] = self.states[self.hi]
        if not torch.isfinite(self.states[self.hi]).all():
            self._note_non_finite(0, self.hi)

    def gather(self, last_only: bool = False) -> torch.Tensor:
        """The states with every rank's boundaries (or only U_N) filled in; rows lo+1..hi are
        ours."""
        if self.group is not None and last_only:
            self.states[-1] = self.group.broadcast(self.states[-1], self.group.size - 1)
        elif self.group is not None:
            self.states[1:] = self.group.all_gather(self.states[self.lo + 1 : self.hi + 1])
        return self.states

    def finish(self, residuals: list[float], last_only: bool) -> tuple[torch.Tensor, list[float]]:
        """The states (``gather``) and, with deferred checks, every iteration's residual over
        the group and the first non-finite state (raised on every rank); with ``last_only``
        all of it in one all-reduce."""
        if not self.defer_checks:
            return self.gather(last_only), residuals
        rows = self.n + 1  # a non-finite state as a code: earliest iteration, then boundary
        code = -math.inf if self.first_bad is None else -(self.first_bad[0] * rows
                                                           + self.first_bad[1])
        if last_only:  # U_N is zero off the last rank: the sum is its broadcast
            last = self.states[-1] if self.hi == self.n else torch.zeros_like(self.states[-1])
            *residuals, worst = self.group.sum_([last], maxima=[*residuals, code])
            self.states[-1] = last
        else:
            *residuals, worst = self.group.max_each([*residuals, code])
            self.gather()
        if worst > -math.inf:
            iteration, boundary = divmod(int(-worst), rows)
            raise FloatingPointError(self.where(boundary, iteration))
        return self.states, residuals

    def _note_non_finite(self, iteration: int, first: int) -> None:
        """Remember this rank's first non-finite boundary (from ``first``) of ``iteration``."""
        if self.first_bad is None:
            bad = ~torch.isfinite(self.states[first : self.hi + 1]).flatten(1).all(dim=1)
            self.first_bad = iteration, first + (int(bad.nonzero()[0, 0]) if bad.any() else 0)

    def _raise_non_finite(self, first: int, iteration: int) -> None:
        states = self.gather()
        bad = ~torch.isfinite(states[first:]).flatten(1).all(dim=1)
        boundary = first + int(bad.nonzero()[0, 0]) if bad.any() else first
        raise FloatingPointError(self.where(boundary, iteration))
