"""The three gradients of a parareal solve (``PararealOptions.backward``).

``unrolled``: reverse mode through the K iterations the forward pass ran, so the exact gradient
of the output it computed. With a^k_n the cotangent of U^k_n, level k of the forward,

    U^k_n+1 = G_n(U^k_n) + F_n(U^k-1_n) - G_n(U^k-1_n)   (n >= k),
    U^k_k = F_k-1(U^k-1_k-1),   U^k_j = U^k-1_j (j < k),

is undone from k = K down to 0: a sequential sweep of coarse VJPs over the level,

    a^k_n += (dG_n/dU^k_n)^T (a^k_n+1 - a^k+1_n+1)      (the second term only for n > k),

(each G_n(U^k_n) is used with + at level k and with - at level k+1), then one batched fine VJP
of the whole level, a^k-1_n += (dF_n/dU^k-1_n)^T a^k_n+1, plus the copied rows j < k. Its cost
mirrors the forward's: K coarse VJP sweeps and K batched fine VJPs, parallel in time.

``fine_adjoint``: the discrete adjoint of the fine propagators at the forward states,
lambda_n = (dF_n/dU_n)^T lambda_n+1 + dL/dU_n, a sequential chain of fine VJPs. The samples'
chains are independent: run for parts of the batch in turn, the chain is pipelined across
ranks (a rank starts a part as soon as its cotangent arrives, the next part being worked on
by the rank after it).

``parareal_adjoint``: the same adjoint recurrence solved backwards in time by parareal, with
VJPs of G as the coarse and batched VJPs of F as the fine propagator.

Across ranks every mode runs on this rank's chunk: cotangents cross chunk boundaries by
send/recv in reverse time order, each rank adds the parameter VJPs of its own slices, and the
gradient to x0 reaches every rank from the first one in the same all-reduce that sums the
parameter gradients over the time group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from pnode_zoo.ode.parareal.iteration import iterate
from pnode_zoo.ode.parareal.problem import Linearization, ParamGrads, Problem, fine_solve

if TYPE_CHECKING:
    from pnode_zoo.distributed.communicator import TimeGroup

__all__ = ["Paths", "Tape", "fine_adjoint", "parareal_adjoint", "unrolled"]


class Tape:
    """The forward pass's own linearisations, kept for ``unrolled`` when ``recompute`` is off
    (memory grows with steps and iterations, like torchdiffeq's backprop; nothing is re-run).

    Its methods are the forward iteration's propagators: they run with autograd on and keep
    the graph. ``fine[j]`` took level j to level j+1; ``coarse[n][j]`` is G_n at level
    j + ``first_level`` (1 after a guess, whose coarse values are ``coarse_set``).

    Args:
        problem: the call.
        wrt_params: keep the graphs to the parameters too.
        guessed: the forward starts from a guess.
    """

    def __init__(self, problem: Problem, wrt_params: bool, guessed: bool) -> None:
        self.problem, self.wrt_params, self.first_level = problem, wrt_params, int(guessed)
        self.fine: list[Linearization] = []
        self.coarse: dict[int, list[Linearization]] = {}
        self.coarse_set: Linearization | None = None

    def _run(self, kind: str, slices: range, states: torch.Tensor, batched: bool,
             wrt_state: bool = True) -> Linearization:
        return Linearization(self.problem, kind, slices, states, wrt_state=wrt_state,
                             wrt_params=self.wrt_params, batched=batched, phase="forward")

    def fine_solve(self, slices: range, states: torch.Tensor) -> torch.Tensor:
        self.fine.append(self._run("fine", slices, states, batched=True))
        return self.fine[-1].value

    def coarse_step(self, n: int, state: torch.Tensor) -> torch.Tensor:
        run = self._run("coarse", range(n, n + 1), state[None], batched=False)
        self.coarse.setdefault(n, []).append(run)
        return run.value[0]

    def coarse_solve(self, slices: range, states: torch.Tensor) -> torch.Tensor:
        self.coarse_set = self._run("coarse", slices, states, batched=True, wrt_state=False)
        return self.coarse_set.value


class Paths:
    """The step states of the forward's fine solves, kept for ``unrolled`` when ``recompute``
    is on and F takes fixed steps: the backward rebuilds the steps' graphs from them instead
    of re-running F first, one fine solve per level fewer (memory: the step states of the K
    levels, where a re-run holds one level's at a time). ``fine[j]`` took level j to j+1.

    Args:
        problem: the call.
    """

    def __init__(self, problem: Problem) -> None:
        self.problem = problem
        self.fine: list[torch.Tensor] = []

    def fine_solve(self, slices: range, states: torch.Tensor) -> torch.Tensor:
        self.fine.append(fine_solve(self.problem, slices, states, path=True))
        return self.fine[-1][-1]


def unrolled(
    problem: Problem,
    levels: list[torch.Tensor],
    grad_states: torch.Tensor,
    guessed: bool,
    grads: ParamGrads | None,
    tape: Tape | None = None,
    paths: Paths | None = None,
) -> torch.Tensor:
    """dL/dx0 through the K forward iterations (``levels`` = U^0..U^K); adds dL/dθ to grads.

    Args:
        problem: the call.
        levels: the forward's states of every level (this rank's rows).
        grad_states: dL/dU^K, [N+1, ...].
        guessed: U^0 was a guess (constant), not the coarse sweep.
        grads: accumulator of the parameter gradients, or None.
        tape: the forward's linearisations (None: re-run the propagators at ``levels``).
        paths: the forward's fine step states (re-run only the coarse propagator).
    """
    own, group = problem.own, problem.group
    lo, hi = own.start, own.stop
    cot = torch.zeros_like(grad_states)  # a^k: this rank's rows lo+1..hi; row lo is handed on
    first_row = lo if lo == 0 else lo + 1
    if problem.return_trajectory:
        cot[first_row : hi + 1] = grad_states[first_row : hi + 1]
    else:
        cot[-1] = grad_states[-1] if hi == problem.num_slices else 0
    x0_grad, upper, checks = torch.zeros_like(grad_states[0]), None, []
    for k in range(len(levels) - 1, -1, -1):
        if not (guessed and k == 0):
            _coarse_sweep(problem, k, levels[k], cot, upper, grads, tape)
        if lo == 0:
            x0_grad += cot[0]
        elif group is not None and lo >= k and not (guessed and k == 0):
            group.reversed().send_next(cot[lo])
        cot[lo] = 0
        checks.append((k, torch.isfinite(cot[lo + 1 : hi + 1]).flatten(1).all(dim=1)))
        if k > 0:
            upper, cot = cot, _fine_level(problem, k, levels, cot, guessed, grads, tape, paths)
    code = _non_finite_code(problem, checks)
    if group is not None:  # dL/dx0 is zero off the first rank: the sum is its broadcast
        code = _reduce(group, grads, x0_grad, code)
    if code >= 0:
        k, row = divmod(int(code), problem.num_slices + 1)
        raise FloatingPointError(
            f"non-finite gradient at the end of {problem.where(row)} in the unrolled backward "
            f"of forward iteration {k}"
        )
    return x0_grad


def _coarse_sweep(
    problem: Problem,
    k: int,
    states: torch.Tensor,
    cot: torch.Tensor,
    upper: torch.Tensor | None,
    grads: ParamGrads | None,
    tape: Tape | None,
) -> None:
    """Level k's coarse VJPs, from the chunk's end (its cotangent received) to max(lo, k)."""
    own, group = problem.own, problem.group
    lo, hi = own.start, own.stop
    if group is not None and k <= hi < problem.num_slices:
        cot[hi] += group.reversed().recv_prev(cot[hi])
    for n in range(hi - 1, max(lo, k) - 1, -1):
        target = cot[n + 1] if upper is None or n <= k else cot[n + 1] - upper[n + 1]
        if tape is not None:
            run = tape.coarse[n][k - tape.first_level]
        else:
            run = Linearization(problem, "coarse", range(n, n + 1), states[n : n + 1],
                                wrt_state=True, wrt_params=grads is not None, batched=False)
        cot[n] += run.pull(target[None], grads)[0]


def _fine_level(
    problem: Problem,
    k: int,
    levels: list[torch.Tensor],
    cot: torch.Tensor,
    guessed: bool,
    grads: ParamGrads | None,
    tape: Tape | None,
    paths: Paths | None,
) -> torch.Tensor:
    """a^k-1 from a^k: the level's fine VJPs (one batched call) and the copied rows."""
    lo, hi = problem.own.start, problem.own.stop
    below, need = torch.zeros_like(cot), grads is not None
    first = max(lo, k - 1)
    if first < hi:
        run = tape.fine[k - 1] if tape is not None else Linearization(
            problem, "fine", range(first, hi), levels[k - 1][first:hi], wrt_state=True,
            wrt_params=need, path=None if paths is None else paths.fine[k - 1])
        below[first:hi] = run.pull(cot[first + 1 : hi + 1], grads)
    if guessed and k == 1 and need and lo < hi:
        # - G_n(guess_n) at level 1: the guess is a constant, only θ gets a gradient (the
        # coarse values of all owned slices were computed; slice 0's is unused, cotangent 0)
        run = tape.coarse_set if tape is not None else Linearization(
            problem, "coarse", range(lo, hi), levels[0][lo:hi], wrt_state=False, wrt_params=True)
        minus = -cot[lo + 1 : hi + 1]
        if lo == 0:
            minus[0] = 0
        run.pull(minus, grads)
    top = min(hi, k - 1)
    below[lo + 1 : top + 1] += cot[lo + 1 : top + 1]  # rows j < k are copies of level k-1's
    return below


def _non_finite_code(problem: Problem, checks: list[tuple[int, torch.Tensor]]) -> float:
    """One check for the whole backward, one read of the device (a read per level would
    stall the pipeline): the latest non-finite boundary of the first level that has one,
    where it started, as k * (N + 1) + row; -1 if none."""
    lo = problem.own.start
    levels_ok = torch.stack([ok.all() for _, ok in checks]).tolist() if checks else []
    bad = next(((k, lo + 1 + int((~ok).nonzero()[-1, 0]))
                for (k, ok), fine in zip(checks, levels_ok, strict=True) if not fine), None)
    return -1.0 if bad is None else float(bad[0] * (problem.num_slices + 1) + bad[1])


def _reduce(group: TimeGroup, grads: ParamGrads | None, shared: torch.Tensor,
            code: float) -> float:
    """The end of a backward on a time group, in one all-reduce: dL/dθ summed over the ranks,
    ``shared`` (zero on all ranks but one) handed to every rank, the largest ``code`` (an
    integer below 2**24, exact in float32) returned."""
    tensors = [shared] + ([] if grads is None else grads.tensors)
    return group.sum_(tensors, maxima=[code], maxima_dtype=torch.float32)[0]


def fine_adjoint(
    problem: Problem, states: torch.Tensor, grad_states: torch.Tensor, grads: ParamGrads | None
) -> torch.Tensor:
    """lambda_0 of the fine adjoint at ``states``, one slice after the other, for each part of
    the batch in turn (``backward_micro_batches``); adds dL/dθ."""
    own, group, n_slices = problem.own, problem.group, problem.num_slices
    backwards = None if group is None else group.reversed()
    jumps = grad_states if problem.return_trajectory else None
    # the last slice whose adjoint is non-finite, kept on the device (a read per slice would
    # stall the chain): a vector-Jacobian product of a NaN raises nothing, so the chain runs on
    lams, bad = [], torch.tensor(-1, device=states.device)
    for part in _batch_parts(states.shape[1], problem.options.backward_micro_batches):
        for n in reversed(own):
            run = Linearization(problem, "fine", range(n, n + 1), states[n : n + 1, part],
                                wrt_state=True, wrt_params=grads is not None, batched=False)
            if n == own.stop - 1:  # F_n was re-run while lambda_n+1 was on its way
                last = own.stop == n_slices
                lam = grad_states[n_slices, part] if last else backwards.recv_prev(
                    states[0, part])
            pulled = run.pull(lam[None], grads)[0]
            lam = pulled if jumps is None else pulled + jumps[n, part]
            bad = torch.where(torch.isfinite(lam).all(), bad, bad.clamp_min(n))
        if group is not None and own.start > 0:
            backwards.send_next(lam)  # the previous rank starts on this part meanwhile
            lam = torch.zeros_like(lam)
        lams.append(lam)
    lam = lams[0] if len(lams) == 1 else torch.cat(lams)
    bad = int(bad.item() if group is None else _reduce(group, grads, lam, bad.item()))
    if bad >= 0:
        raise FloatingPointError(
            f"non-finite adjoint at the start of slice {bad} in the fine adjoint"
        )
    return lam


def _batch_parts(size: int, parts: int) -> list[slice]:
    """``parts`` contiguous parts of a batch of ``size`` samples, as equal as can be (one per
    sample if there are fewer samples; one, empty, for an empty batch)."""
    parts = max(min(parts, size), 1)
    bounds = [round(i * size / parts) for i in range(parts + 1)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def parareal_adjoint(
    problem: Problem, states: torch.Tensor, grad_states: torch.Tensor, grads: ParamGrads | None
) -> torch.Tensor:
    """lambda_0 of the fine adjoint at ``states``, by parareal backwards in time; adds dL/dθ."""
    own, group, n_slices = problem.own, problem.group, problem.num_slices
    # Every fine VJP is taken at the same forward states: a fixed-step F re-runs once, on all
    # owned slices, and each VJP rebuilds its steps from that run's step states.
    stepwise = problem.fine.info.kind == "fixed" and problem.fine.steps > 1
    fine_paths: list[torch.Tensor] = []

    def fine_run(slices: range, wrt_state: bool, wrt_params: bool) -> Linearization:
        path = None
        if stepwise:
            if not fine_paths:
                fine_paths.append(Linearization(
                    problem, "fine", own, states[own.start : own.stop], wrt_state=True,
                    wrt_params=False).path)
            path = fine_paths[0][:, slices.start - own.start : slices.stop - own.start]
        return Linearization(problem, "fine", slices, states[slices.start : slices.stop],
                             wrt_state=wrt_state, wrt_params=wrt_params, path=path)

    def fine(slices: range, cotangents: torch.Tensor) -> torch.Tensor:
        # Iteration index j runs backwards in time: boundary j holds lambda_(N-j).
        owned = range(n_slices - slices.stop, n_slices - slices.start)
        return fine_run(owned, True, False).pull(cotangents.flip(0)).flip(0)

    coarse_runs: dict[int, Linearization] = {}

    def coarse(j: int, cotangent: torch.Tensor) -> torch.Tensor:
        n = n_slices - 1 - j
        if n not in coarse_runs:  # G is linearised at the forward states: run it once
            coarse_runs[n] = Linearization(problem, "coarse", range(n, n + 1),
                                           states[n : n + 1], wrt_state=True, wrt_params=False,
                                           batched=False)
        return coarse_runs[n].pull(cotangent[None], keep=True)[0]

    def where(boundary: int, iteration: int) -> str:
        return (
            f"non-finite adjoint at the start of slice {n_slices - boundary} "
            f"in backward parareal iteration {iteration}"
        )

    sweep = iterate(
        grad_states[n_slices], fine, coarse, num_slices=n_slices,
        max_iters=problem.backward_max_iters, tol=problem.backward_tol, where=where,
        source=grad_states.flip(0) if problem.return_trajectory else None, linear=True,
        group=None if group is None else group.reversed(),
    )
    problem.stats.backward_iters = len(sweep.residuals)
    problem.stats.backward_residuals = sweep.residuals
    lams = sweep.states.flip(0)
    if grads is not None:
        fine_run(own, False, True).pull(lams[own.start + 1 : own.stop + 1], grads)
        if group is not None:
            group.sum_(grads.tensors)
    return lams[0]
