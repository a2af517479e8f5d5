"""Statistics of one call of a parareal block, and the critical-path cost model.

Cost model (``PararealStats.critical_path_nfe``). Each of P ranks owns N/P contiguous slices
(rank r owns slices [r*N//P, (r+1)*N//P)). The unit of cost is one evaluation of f on one
slice's batch; a vector-Jacobian product through f counts as one unit as well. A batched
solve (fine solves of an iteration, or the coarse solves of a warm start) costs, on the critical
path, the largest number of its slices any one rank owns times the units per slice: ranks
solve their own slices one after another and wait for the slowest. Coarse propagation of single
slices (the coarse sweep, in either direction) is sequential over the slices and adds all its
units. Communication and the pipelining of the coarse sweep are not modelled: this is the
classic, non-pipelined parareal schedule, S = N/((K+1)·N·r + K) when nothing is skipped.
Newton Jacobians count as one unit (one vmapped call), linear solves as none.

Under a time group each rank records only its own work (its chunk's fine solves, its part of
the coarse sweep), plus ``time_comm``/``time_wait``; the cost model of such a record describes
that rank, so feed it from a one-process call to model a P-rank run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from pnode_zoo.ode.propagators import Work

__all__ = ["PHASES", "PararealStats", "time_group_critical_path"]

PHASES = ("forward", "backward")


@dataclass
class PararealStats:
    """What the last call of a parareal block did; the backward fields fill in on backward.

    Attributes:
        num_slices: N.
        forward_iters: parareal iterations of the forward pass (0 = the coarse sweep alone).
        backward_iters: parareal iterations of the gradient: the forward's K for
            ``"unrolled"``, the adjoint's for ``"parareal_adjoint"``, 0 for ``"fine_adjoint"``.
        forward_residuals: per forward iteration, the largest relative change of a slice
            boundary state, max_n |U^k_n - U^(k-1)_n| / |U^k_n| (2-norms over the whole state).
        backward_residuals: the same for the adjoint states, per backward iteration.
        nfe_coarse: calls of f made by the coarse propagator, forward and backward together
            (a batched call counts once).
        nfe_fine: calls of f made by the fine propagator, forward and backward together.
        newton_iters: Newton iterations of implicit propagators (each a batched linear solve).
        linear_solves: per-sample linear systems solved by implicit propagators.
        time_coarse: wall seconds inside the coarse propagator (VJPs included).
        time_fine: wall seconds inside the fine propagator (VJPs included).
        time_comm: wall seconds in sends and collectives of the time group (0 in one process).
        time_wait: wall seconds blocked receiving a boundary state from the neighbour rank
            (pipeline idle time plus the transfer; 0 in one process).
        rank: this rank's position in the time group (0 in one process).
        ranks: size of the time group (1 in one process).
        cache_hit_rate: the share of the batch whose start came from a per-sample warm-start
            cache (``NeuralCDEBlock``); None when no cache was looked up.
        tol: the forward's stopping tolerance.
        converged: whether the forward met ``tol`` (or reached K = N, the fine solve itself);
            False when the ``max_iters`` cap stopped it first.
        timeline: (what, start, stop) in ``time.perf_counter()`` seconds of every fine solve,
            coarse step, VJP ("fine"/"coarse"), send or collective ("comm") and blocked
            receive ("wait") of the last forward and backward on this rank.
    """

    num_slices: int
    tol: float = 0.0
    converged: bool = False
    forward_iters: int = 0
    backward_iters: int = 0
    forward_residuals: list[float] = field(default_factory=list)
    backward_residuals: list[float] = field(default_factory=list)
    nfe_coarse: int = 0
    nfe_fine: int = 0
    newton_iters: int = 0
    linear_solves: int = 0
    time_coarse: float = 0.0
    time_fine: float = 0.0
    time_comm: float = 0.0
    time_wait: float = 0.0
    rank: int = 0
    ranks: int = 1
    cache_hit_rate: float | None = None
    timeline: list[tuple[str, float, float]] = field(default_factory=list, repr=False)
    _batched: list[tuple[str, str, int, int, int]] = field(default_factory=list, repr=False)
    _sequential: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(PHASES, 0), repr=False
    )

    def record(
        self,
        phase: str,
        kind: str,
        slices: range,
        work: Work,
        intervals: list[tuple[float, float]],
        units: int,
        batched: bool,
    ) -> None:
        """Add one propagation (or VJP) to the counters, the timeline and the cost model.

        Args:
            phase: ``"forward"`` or ``"backward"``.
            kind: ``"coarse"`` or ``"fine"``.
            slices: the slices it covered.
            work: the work it did.
            intervals: (start, stop) ``perf_counter`` seconds of its parts (a VJP: the
                recomputation and the pull-back).
            units: cost-model units per slice (f evaluations plus f-VJPs).
            batched: whether its slices were solved together (else one slice, sequentially).
        """
        seconds = sum(stop - start for start, stop in intervals)
        self.timeline += [(kind, start, stop) for start, stop in intervals]
        if kind == "coarse":
            self.nfe_coarse += work.nfe
            self.time_coarse += seconds
        else:
            self.nfe_fine += work.nfe
            self.time_fine += seconds
        self.newton_iters += work.newton_iters
        self.linear_solves += work.linear_solves
        if batched:
            self._batched.append((phase, kind, slices.start, slices.stop, units))
        else:
            self._sequential[phase] += units * len(slices)

    def critical_path_nfe(self, ranks: int, phase: str = "forward") -> int:
        """f-evaluation units on the critical path with ``ranks`` time-parallel ranks.

        Args:
            ranks: P, 1 <= P <= num_slices.
            phase: ``"forward"``, ``"backward"`` or ``"total"``.
        """
        n = self.num_slices
        if not isinstance(ranks, int) or not 1 <= ranks <= n:
            raise ValueError(f"ranks must be an integer in [1, num_slices={n}], got {ranks!r}")
        phases = PHASES if phase == "total" else (phase,)
        if any(p not in PHASES for p in phases):
            raise ValueError(f"phase must be 'forward', 'backward' or 'total', got {phase!r}")
        bounds = [r * n // ranks for r in range(ranks + 1)]
        total = sum(self._sequential[p] for p in phases)
        for event_phase, _, start, stop, units in self._batched:
            if event_phase in phases:
                owned = max(
                    min(stop, bounds[r + 1]) - max(start, bounds[r]) for r in range(ranks)
                )
                total += max(owned, 0) * units
        return total

    def sequential_nfe(self, phase: str = "forward") -> int:
        """Units of the work done one slice after another (the coarse sweep), which the
        critical path carries whole at any number of ranks; the rest is batched.

        Args:
            phase: ``"forward"`` or ``"backward"``.
        """
        return self._sequential[phase]

    def serial_fine_nfe(self) -> float:
        """Units of the serial fine solve of all slices (measured per-slice cost of F x N)."""
        fine = [(stop - start, units) for p, k, start, stop, units in self._batched
                if p == "forward" and k == "fine"]
        if not fine:
            return float("nan")
        slices = sum(count for count, _ in fine)
        return self.num_slices * sum(count * units for count, units in fine) / slices

    def modelled_speedup(self, ranks: int) -> float:
        """Serial fine solve over the forward critical path with ``ranks`` ranks (modelled)."""
        return self.serial_fine_nfe() / self.critical_path_nfe(ranks, "forward")

    def summary(self) -> dict[str, float]:
        """Scalar statistics, for loggers."""
        out = {
            "converged": float(self.converged),
            "forward_iters": self.forward_iters,
            "backward_iters": self.backward_iters,
            "nfe_coarse": self.nfe_coarse,
            "nfe_fine": self.nfe_fine,
            "newton_iters": self.newton_iters,
            "linear_solves": self.linear_solves,
            "time_coarse": self.time_coarse,
            "time_fine": self.time_fine,
            "time_comm": self.time_comm,
            "time_wait": self.time_wait,
        }
        if self.forward_residuals:
            out["forward_residual"] = self.forward_residuals[-1]
        if self.backward_residuals:
            out["backward_residual"] = self.backward_residuals[-1]
        return out


def time_group_critical_path(sequential: Sequence[float], batched: Sequence[float]) -> float:
    """The critical path of a time group from its ranks' own records (each rank records only
    its chunk): the whole coarse sweep, every rank's part of it in turn, plus the busiest rank's
    batched work (the last rank's, in every iteration of the classic schedule). Fed with the
    ranks' ``sequential_nfe`` and ``critical_path_nfe(1) - sequential_nfe``, it equals
    ``critical_path_nfe(P)`` of the same call on one process (tested).

    Args:
        sequential: per rank, units of its sequential work.
        batched: per rank, units of its batched work.
    """
    return sum(sequential) + max(batched)
