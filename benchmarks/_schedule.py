"""The time group's schedule with messages: modelled wall time of a parareal call on P ranks.

The benchmarks' cost model (``comm_model.py``, ``time_parallel.py``), kept out of the numerics
package: it replays the schedule of ``pnode_zoo/ode/parareal/`` by hand, so a change to the
iteration must be mirrored here; ``tests/test_bench_schedule.py`` holds it to the block's own
counters at P = 1 (and at P = N for K = 1).

``PararealStats.critical_path_nfe`` counts f-evaluations of the classic schedule and leaves
messages out. This module replays what each rank of a time group does in a forward pass
(``parareal/iteration.py``) and in a training step with the ``unrolled`` gradient
(``parareal/adjoints.py``), operation by operation, from measured seconds per slice of F, G
and their vector-Jacobian products and a latency-bandwidth cost per message:

- a rank starts its work as soon as its inputs are there: its part of the coarse sweep when
  the boundary state from the previous rank arrives, its fine solves of iteration k as soon
  as its own iteration k-1 is done, its coarse corrections when the new boundary state
  arrives (point-to-point sends do not block the sender);
- a collective (the residual's max-all-reduce, the broadcast of U_N, the gradients'
  all-reduce) ends for every rank at the latest rank's arrival plus the collective's cost;
- a batched fine solve (or VJP) of m slices costs m times the per-slice cost (CPU ranks: work
  grows with the batch; on a GPU a batched solve of few slices can cost less, which this
  overestimates).

With a tolerance the residual is all-reduced after the sweep and after every iteration: each
iteration waits for the whole chain of coarse corrections, so with P = N the time is the
classic N·G + Σ_k (F + (N-k)·G). ``pipelined`` (``PararealOptions.pipelined``: a fixed K with
explicit fixed-step propagators) reduces them once at the end: ranks run ahead and the time
is the pipelined N·G + K·(F + G).

Not modelled: a warm start or initial guess (the coarse sweep is assumed), the
``fine_adjoint`` and ``parareal_adjoint`` gradients, and contention between ranks that share
cores or a memory bus (feed costs measured with all ranks busy to include it).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

__all__ = ["CommCosts", "Schedule", "SliceCosts", "modelled_time"]

#: bytes of one residual (float64) in the max-all-reduce
_RESIDUAL_BYTES = 8


@dataclass(frozen=True)
class SliceCosts:
    """Measured seconds of one slice's work, for the batch of the call being modelled.

    Measure them as the modelled pass runs them: for a training step with ``recompute`` off,
    ``fine``/``coarse`` are solves that keep their graph and the VJPs are the pull-backs
    alone; with ``recompute`` on, the solves run without a graph and each VJP includes its
    re-run (for a fixed-step F under ``unrolled``, the rebuild of its steps from the step
    states the forward kept).

    Args:
        fine: F on one slice.
        coarse: G on one slice.
        fine_vjp: one slice's VJP through F (training steps only).
        coarse_vjp: one slice's VJP through G (training steps only).
        state_bytes: bytes of one boundary state (the batch's state), the size of a message.
        param_bytes: bytes of the parameter gradients summed over the time group.
        overhead: seconds per call spent outside the propagators and messages (the
            iteration's bookkeeping; in a training step also loss, head and optimizer), best
            calibrated as measured minus modelled time on one process.
    """

    fine: float
    coarse: float
    fine_vjp: float = 0.0
    coarse_vjp: float = 0.0
    state_bytes: int = 0
    param_bytes: int = 0
    overhead: float = 0.0

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{f.name} must be a finite number >= 0, got {value!r}")

    def fine_scaled(self, factor: float) -> SliceCosts:
        """The costs with ``factor`` times the fine steps per slice: F and its VJP scale, G and
        its VJP (a fixed number of coarse steps per slice) stay. The same fine solve cut into
        N' slices instead of N is ``fine_scaled(N / N')``.

        Args:
            factor: new fine steps per slice over the measured ones.
        """
        return dataclasses.replace(self, fine=self.fine * factor, fine_vjp=self.fine_vjp * factor)


@dataclass(frozen=True)
class CommCosts:
    """Latency-bandwidth costs of messages between ranks (Hockney model).

    A message of n bytes costs ``latency + n / bandwidth``; collectives use the textbook
    algorithms: a broadcast is a binomial tree, ceil(log2 P) rounds; an all-reduce the cheaper
    of recursive doubling (2 ceil(log2 P) rounds of the whole message) and a ring (2 (P-1)
    rounds of 1/P of it); an all-gather a ring of P-1 rounds. The defaults are free messages.

    Args:
        latency: seconds per message, one way (half a ping-pong's round trip).
        bandwidth: bytes per second.
    """

    latency: float = 0.0
    bandwidth: float = math.inf

    def __post_init__(self) -> None:
        if not (math.isfinite(self.latency) and self.latency >= 0):
            raise ValueError(f"latency must be a finite number >= 0, got {self.latency!r}")
        if not self.bandwidth > 0:
            raise ValueError(f"bandwidth must be > 0, got {self.bandwidth!r}")

    def message(self, nbytes: float) -> float:
        """Seconds for one point-to-point message of ``nbytes``."""
        return self.latency + nbytes / self.bandwidth

    def broadcast(self, nbytes: float, ranks: int) -> float:
        """Seconds for a broadcast of ``nbytes`` to ``ranks`` ranks."""
        return math.ceil(math.log2(ranks)) * self.message(nbytes)

    def all_reduce(self, nbytes: float, ranks: int) -> float:
        """Seconds for an all-reduce of ``nbytes`` over ``ranks`` ranks."""
        if ranks == 1:
            return 0.0
        doubling = 2 * math.ceil(math.log2(ranks)) * self.message(nbytes)
        ring = 2 * (ranks - 1) * self.message(nbytes / ranks)
        return min(doubling, ring)

    def all_gather(self, nbytes_per_rank: float, ranks: int) -> float:
        """Seconds for an all-gather of ``nbytes_per_rank`` from each of ``ranks`` ranks."""
        return (ranks - 1) * self.message(nbytes_per_rank)


@dataclass
class Schedule:
    """A modelled call.

    Attributes:
        seconds: wall time of the call (the last rank's finish).
        busy: per rank, seconds of F, G and their VJPs.
    """

    seconds: float
    busy: list[float] = field(default_factory=list)

    @property
    def idle(self) -> list[float]:
        """Per rank, seconds not spent on F, G or their VJPs: messages and waiting."""
        return [self.seconds - b for b in self.busy]


class _Ranks:
    """The clocks of P ranks running one call."""

    def __init__(self, num_slices: int, ranks: int, comm: CommCosts) -> None:
        if not isinstance(ranks, int) or ranks < 1:
            raise ValueError(f"ranks must be an integer >= 1, got {ranks!r}")
        if not isinstance(num_slices, int) or num_slices < 1 or num_slices % ranks:
            raise ValueError(
                f"num_slices={num_slices!r} must be a positive multiple of ranks={ranks}"
            )
        self.n, self.p, self.comm = num_slices, ranks, comm
        self.per_rank = num_slices // ranks
        self.clock = [0.0] * ranks
        self.busy = [0.0] * ranks

    def chunk(self, r: int) -> tuple[int, int]:
        return r * self.per_rank, (r + 1) * self.per_rank

    def work(self, r: int, seconds: float) -> None:
        self.clock[r] += seconds
        self.busy[r] += seconds

    def receive(self, r: int, arrival: float) -> None:
        self.clock[r] = max(self.clock[r], arrival)

    def collective(self, seconds: float) -> None:
        """Every rank leaves at the latest arrival plus the collective's cost."""
        end = max(self.clock) + seconds
        self.clock = [end] * self.p

    def schedule(self, overhead: float) -> Schedule:
        return Schedule(max(self.clock) + overhead, list(self.busy))


def _forward(
    ranks: _Ranks, costs: SliceCosts, iters: int, pipelined: bool, trajectory: bool
) -> None:
    n, p, comm = ranks.n, ranks.p, ranks.comm
    message = comm.message(costs.state_bytes)
    residual = comm.all_reduce(_RESIDUAL_BYTES, p)
    arrival = [0.0] * p  # when the boundary state rank r sent (this iteration) reaches r + 1
    # pipelined, the last rank leaves its last coarse step until after its first fine solve
    deferred = int(pipelined and iters > 0)
    for r in range(p):  # the coarse sweep, rank after rank
        lo, hi = ranks.chunk(r)
        if lo > 0:
            ranks.receive(r, arrival[r - 1])
        ranks.work(r, (hi - lo - (deferred if hi == n else 0)) * costs.coarse)
        if hi < n:
            arrival[r] = ranks.clock[r] + message
    if not pipelined:  # the non-finite check of the sweep
        ranks.collective(residual)
    for k in range(1, iters + 1):
        for r in range(p):  # rank r's inputs of iteration k come from r - 1: done before
            lo, hi = ranks.chunk(r)
            first = max(lo, k - 1)  # slices before k - 1 have converged
            ranks.work(r, max(hi - first, 0) * costs.fine)
            if k == 1 and hi == n:
                ranks.work(r, deferred * costs.coarse)
            if lo >= k:
                ranks.receive(r, arrival[r - 1])
            ranks.work(r, max(hi - max(lo, k), 0) * costs.coarse)
            if k <= hi < n:
                arrival[r] = ranks.clock[r] + message
        if not pipelined:
            ranks.collective(residual)
    # pipelined: every iteration's residual and the non-finite checks in one reduction, with
    # U_N from the last rank in the same float64 sum unless every boundary is all-gathered
    residuals = _RESIDUAL_BYTES * (iters + 2)  # and the non-finite code
    if pipelined and not trajectory:  # a sum: each rank's residuals in a row of their own
        ranks.collective(comm.all_reduce(2 * costs.state_bytes + residuals * p, p))
        return
    if pipelined:
        ranks.collective(comm.all_reduce(residuals, p))
    if trajectory:
        ranks.collective(comm.all_gather(ranks.per_rank * costs.state_bytes, p))
    else:
        ranks.collective(comm.broadcast(costs.state_bytes, p))  # U_N from the last rank


def _unrolled_backward(ranks: _Ranks, costs: SliceCosts, iters: int) -> None:
    n, p, comm = ranks.n, ranks.p, ranks.comm
    message = comm.message(costs.state_bytes)
    arrival = [0.0] * p  # when the cotangent rank r sent (this level) reaches r - 1
    for k in range(iters, -1, -1):
        for r in reversed(range(p)):  # level k's cotangents come from r + 1: done before
            lo, hi = ranks.chunk(r)
            if k <= hi < n:
                ranks.receive(r, arrival[r + 1])
            ranks.work(r, max(hi - max(lo, k), 0) * costs.coarse_vjp)
            if lo > 0 and k <= lo:
                arrival[r] = ranks.clock[r] + message
            if k > 0:
                ranks.work(r, max(hi - max(lo, k - 1), 0) * costs.fine_vjp)
    # dL/dθ summed, dL/dx0 from the first rank and the non-finite check: one all-reduce
    ranks.collective(comm.all_reduce(costs.param_bytes + costs.state_bytes
                                     + _RESIDUAL_BYTES * p, p))


def modelled_time(
    costs: SliceCosts,
    num_slices: int,
    ranks: int,
    iters: int,
    comm: CommCosts | None = None,
    *,
    train: bool = False,
    pipelined: bool = False,
    trajectory: bool = False,
) -> Schedule:
    """Modelled wall time of a forward pass, or of a training step (forward and ``unrolled``
    backward), on ``ranks`` ranks: modelled, never measured.

    Args:
        costs: measured per-slice costs (of a training step when ``train``: see
            ``SliceCosts``).
        num_slices: N, a multiple of ``ranks``.
        ranks: P, the size of the time group (1: one process, no messages).
        iters: K, the forward's parareal iterations (0..N; the backward undoes all K).
        comm: message costs (None: free).
        train: model a training step, not a forward pass.
        pipelined: the residuals reduced once at the end (``PararealOptions.pipelined``), not
            after the sweep and every iteration.
        trajectory: the caller wants every boundary (all-gather instead of a broadcast).
    """
    group = _Ranks(num_slices, ranks, comm or CommCosts())
    k = _iters(iters, num_slices)
    _forward(group, costs, k, pipelined, trajectory)
    if train:
        _unrolled_backward(group, costs, k)
    return group.schedule(costs.overhead)


def _iters(iters: int, num_slices: int) -> int:
    if not isinstance(iters, int) or not 0 <= iters <= num_slices:
        raise ValueError(f"iters must be an integer in [0, num_slices={num_slices}], got {iters!r}")
    return iters
