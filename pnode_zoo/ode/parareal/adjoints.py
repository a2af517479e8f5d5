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
lambda_n = (dF_n/dU_n)^T lambda_n+1 + dL/dU_n, a sequential chain of fine VJPs.

``parareal_adjoint``: the same adjoint recurrence solved backwards in time by parareal, with
VJPs of G as the coarse and batched VJPs of F as the fine propagator.

Across ranks every mode runs on this rank's chunk: cotangents cross chunk boundaries by
send/recv in reverse time order, each rank adds the parameter VJPs of its own slices, and the
gradient to x0 is broadcast from the first rank (the caller sums parameter gradients over the
time group).
"""

from __future__ import annotations

import torch

from pnode_zoo.ode.parareal.iteration import iterate
from pnode_zoo.ode.parareal.problem import ParamGrads, Problem, graph


def unrolled(
    problem: Problem,
    levels: list[torch.Tensor],
    grad_states: torch.Tensor,
    guessed: bool,
    grads: ParamGrads | None,
) -> torch.Tensor:
    """dL/dx0 through the K forward iterations (``levels`` = U^0..U^K); adds dL/dθ to grads.

    Args:
        problem: the call.
        levels: the forward's states of every level (this rank's rows).
        grad_states: dL/dU^K, [N+1, ...].
        guessed: U^0 was a guess (constant), not the coarse sweep.
        grads: accumulator of the parameter gradients, or None.
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
            _coarse_sweep(problem, k, levels[k], cot, upper, grads)
        if lo == 0:
            x0_grad += cot[0]
        elif group is not None and lo >= k and not (guessed and k == 0):
            group.reversed().send_next(cot[lo])
        cot[lo] = 0
        checks.append((k, torch.isfinite(cot[lo + 1 : hi + 1]).flatten(1).all(dim=1)))
        if k > 0:
            upper, cot = cot, _fine_level(problem, k, levels, cot, guessed, grads)
    _raise_if_non_finite(problem, checks)
    return x0_grad if group is None else group.broadcast(x0_grad, 0)


def _coarse_sweep(
    problem: Problem,
    k: int,
    states: torch.Tensor,
    cot: torch.Tensor,
    upper: torch.Tensor | None,
    grads: ParamGrads | None,
) -> None:
    """Level k's coarse VJPs, from the chunk's end (its cotangent received) to max(lo, k)."""
    own, group = problem.own, problem.group
    lo, hi = own.start, own.stop
    if group is not None and k <= hi < problem.num_slices:
        cot[hi] += group.reversed().recv_prev(cot[hi])
    for n in range(hi - 1, max(lo, k) - 1, -1):
        target = cot[n + 1] if upper is None or n <= k else cot[n + 1] - upper[n + 1]
        pull = graph(problem, "coarse", range(n, n + 1), states[n : n + 1],
                     wrt_state=True, grads=grads, batched=False)
        cot[n] += pull(target[None])[0]


def _fine_level(
    problem: Problem,
    k: int,
    levels: list[torch.Tensor],
    cot: torch.Tensor,
    guessed: bool,
    grads: ParamGrads | None,
) -> torch.Tensor:
    """a^k-1 from a^k: the level's fine VJPs (one batched call) and the copied rows."""
    lo, hi = problem.own.start, problem.own.stop
    below = torch.zeros_like(cot)
    first = max(lo, k - 1)
    if first < hi:
        pull = graph(problem, "fine", range(first, hi), levels[k - 1][first:hi],
                     wrt_state=True, grads=grads)
        below[first:hi] = pull(cot[first + 1 : hi + 1])
    start = max(lo, 1)
    if guessed and k == 1 and grads is not None and start < hi:
        # - G_n(guess_n) at level 1: the guess is a constant, only θ gets a gradient
        pull = graph(problem, "coarse", range(start, hi), levels[0][start:hi],
                     wrt_state=False, grads=grads)
        pull(-cot[start + 1 : hi + 1])
    top = min(hi, k - 1)
    below[lo + 1 : top + 1] += cot[lo + 1 : top + 1]  # rows j < k are copies of level k-1's
    return below


def _raise_if_non_finite(problem: Problem, checks: list[tuple[int, torch.Tensor]]) -> None:
    """One check for the whole backward (a sync per level would stall the pipeline); names
    the latest non-finite boundary of the first level that has one, where it started."""
    lo = problem.own.start
    bad = next(((k, lo + 1 + int((~ok).nonzero()[-1, 0])) for k, ok in checks if not ok.all()),
               None)
    code = -1.0 if bad is None else float(bad[0] * (problem.num_slices + 1) + bad[1])
    if problem.group is not None:
        code = problem.group.max(code)
    if code >= 0:
        k, row = divmod(int(code), problem.num_slices + 1)
        raise FloatingPointError(
            f"non-finite gradient at the end of {problem.where(row)} in the unrolled backward "
            f"of forward iteration {k}"
        )


def fine_adjoint(
    problem: Problem, states: torch.Tensor, grad_states: torch.Tensor, grads: ParamGrads | None
) -> torch.Tensor:
    """lambda_0 of the fine adjoint at ``states``, one slice after the other; adds dL/dθ."""
    own, group, n_slices = problem.own, problem.group, problem.num_slices
    backwards = None if group is None else group.reversed()
    jumps = grad_states if problem.return_trajectory else None
    bad = -1  # the last slice whose adjoint is non-finite; ranks stay in step until told
    for n in reversed(own):
        pull = graph(problem, "fine", range(n, n + 1), states[n : n + 1],
                     wrt_state=True, grads=grads, batched=False)
        if n == own.stop - 1:  # F_n was re-run while lambda_n+1 was on its way
            last = own.stop == n_slices
            lam = grad_states[n_slices] if last else backwards.recv_prev(states[0])
        pulled = pull(lam[None])[0]
        lam = pulled if jumps is None else pulled + jumps[n]
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
            f"non-finite adjoint at the start of slice {bad} in the fine adjoint"
        )
    return lam


def parareal_adjoint(
    problem: Problem, states: torch.Tensor, grad_states: torch.Tensor, grads: ParamGrads | None
) -> torch.Tensor:
    """lambda_0 of the fine adjoint at ``states``, by parareal backwards in time; adds dL/dθ."""
    own, group, n_slices = problem.own, problem.group, problem.num_slices

    def fine(slices: range, cotangents: torch.Tensor) -> torch.Tensor:
        # Iteration index j runs backwards in time: boundary j holds lambda_(N-j).
        owned = range(n_slices - slices.stop, n_slices - slices.start)
        pull = graph(problem, "fine", owned, states[owned.start : owned.stop],
                     wrt_state=True, grads=None)
        return pull(cotangents.flip(0)).flip(0)

    coarse_graphs = {}

    def coarse(j: int, cotangent: torch.Tensor) -> torch.Tensor:
        n = n_slices - 1 - j
        if n not in coarse_graphs:  # G is linearised at the forward states: build once
            coarse_graphs[n] = graph(problem, "coarse", range(n, n + 1), states[n : n + 1],
                                     wrt_state=True, grads=None, batched=False, reuse=True)
        return coarse_graphs[n](cotangent[None])[0]

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
        pull = graph(problem, "fine", own, states[own.start : own.stop],
                     wrt_state=False, grads=grads)
        pull(lams[own.start + 1 : own.stop + 1])
    return lams[0]
