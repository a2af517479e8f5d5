"""The time-parallel communicator: one time group's ranks, each owning a contiguous chunk of slices.

A parareal block with a ``TimeGroup`` runs the same iteration as in one process, but each rank
solves only its chunk: boundary states pass rank to rank by point-to-point send/recv (the
pipelined coarse sweep), the residual is max-all-reduced (the convergence decision), and the
chunks are all-gathered at the end so every rank holds the whole trajectory. The backward pass
uses the reversed view (``TimeGroup.reversed``), in which "next" is the rank that owns the
earlier slices.

Agreed failure: a rank whose own part of a step raises (a propagator or a vector-Jacobian
product through ``TimeGroup.attempt``) posts "rank R failed: <type>: <message>" to the group's
store and goes on with zero stand-ins, computing nothing more: it still sends, receives and
joins every collective the others will wait in, so no peer blocks on it. Every all-reduce
carries one more number, the count of ranks that failed, and raises on every rank at once: the
failed rank its own exception, the others ``RankFailed`` with the posted message. Each step of
a parareal solve ends in an all-reduce after its last propagator call (the residual, the
non-finite check, the gradients' sum), so the failure is agreed within one iteration and the
healthy path pays no extra collective. An exception elsewhere (outside ``attempt``) is posted
too (``TimeGroup.fail``) and ends its process; a peer's receive or collective then fails on
the closed connection (or at the group's timeout) and raises ``RankFailed`` naming the cause.

Timers, cumulative in ``seconds``: ``"wait"`` is the time blocked in ``recv`` (idle until the
previous rank's boundary state arrives, plus the transfer), ``"comm"`` the time in sends and
collectives (including waiting for the slowest rank at a collective).

World layout (``create_groups``): a ``torch.distributed.device_mesh`` of shape
(P_data, P_time) with dimensions named ``data`` and ``time``; rank r = data_index * P_time +
time_index, so a time group is a block of consecutive ranks (on one node when P_time divides
the processes per node).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import timedelta
from time import perf_counter
from typing import TypeVar

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.profiler import record_function

__all__ = [
    "RankFailed",
    "TimeGroup",
    "Timers",
    "clock",
    "create_groups",
    "synchronised_timers",
]

T = TypeVar("T")


class RankFailed(RuntimeError):
    """Another rank of the time group raised; the message names that rank and its exception."""


_synchronised = False  # see ``synchronised_timers``


@contextmanager
def synchronised_timers() -> Iterator[None]:
    """Inside, every timer reading (``clock``) on a CUDA device first waits for the device's
    queued work: device times, at the cost of a device-wide synchronisation per reading (84
    per training step of the default digits model), which also makes every send blocking.
    Outside, the default, the timers read the host clock alone: exact on the CPU, and on a
    GPU the time work was queued (torch.profiler's ranges, recorded either way, give the
    device's own times)."""
    global _synchronised
    before, _synchronised = _synchronised, True
    try:
        yield
    finally:
        _synchronised = before


def clock(device: torch.device) -> float:
    """``perf_counter()``; inside ``synchronised_timers``, once the device's queued work is
    done (CUDA runs asynchronously)."""
    if _synchronised and device.type == "cuda":
        torch.cuda.synchronize(device)
    return perf_counter()


@dataclass
class Timers:
    """What the views of one group share: cumulative ``seconds`` per kind, the (kind, start,
    stop) log of the current call (set by the solve that wants a timeline, else None), the
    sends still in flight, the number of calls begun and this rank's failure in the current
    call."""

    seconds: dict[str, float] = field(default_factory=lambda: {"comm": 0.0, "wait": 0.0})
    log: list[tuple[str, float, float]] | None = None
    pending: list = field(default_factory=list)  # sends in flight
    calls: int = 0
    failure: Exception | None = None


class TimeGroup:
    """Ranks of one time group, in time order; rank ``ranks[i]`` owns the i-th chunk of slices.

    Every tensor a collective touches lives on ``device`` (NCCL accepts only CUDA tensors;
    gloo takes CPU ones); the timers synchronise that device only inside
    ``synchronised_timers``.

    Args:
        group: the torch.distributed process group of these ranks.
        ranks: their global ranks, in time order.
        device: where the group's tensors live (None: the current CUDA device for NCCL, else
            the CPU).
        reverse: view the group in reverse time order (for the adjoint).
        timers: timers to share with another view of the same group (None: new timers).
    """

    def __init__(
        self,
        group: dist.ProcessGroup,
        ranks: Sequence[int],
        device: torch.device | None = None,
        reverse: bool = False,
        timers: Timers | None = None,
    ) -> None:
        self.group, self.ranks, self.reverse = group, list(ranks), reverse
        if device is None:
            nccl = dist.get_backend(group) == "nccl"
            device = torch.device("cuda", torch.cuda.current_device()) if nccl else None
        self.device = torch.device("cpu") if device is None else torch.device(device)
        self.timers = Timers() if timers is None else timers
        position = self.ranks.index(dist.get_rank())
        self.size = len(self.ranks)
        self.index = self.size - 1 - position if reverse else position

    @property
    def seconds(self) -> dict[str, float]:
        """Cumulative ``"comm"`` and ``"wait"`` seconds of this group (all views share them)."""
        return self.timers.seconds

    def reversed(self) -> TimeGroup:
        """The same group in reverse time order, sharing the timers."""
        return TimeGroup(self.group, self.ranks, self.device, not self.reverse, self.timers)

    def _global(self, index: int) -> int:
        return self.ranks[self.size - 1 - index if self.reverse else index]

    def begin_call(self) -> None:
        """Start a call (a forward or backward solve; every rank begins the same ones): a
        failure agreed in an earlier call is behind the group, and posts are the call's own."""
        self.timers.calls += 1
        self.timers.failure = None

    @property
    def _failure_key(self) -> str:
        return f"pnode_zoo/failed/{self.group.group_name}/{self.timers.calls}"

    def _posted(self) -> str | None:
        """The first failure posted by a rank of the group, if any (None also when the store
        is gone with the rank that held it)."""
        try:
            store = self.group.get_group_store()
            store.set_timeout(timedelta(seconds=5))  # on the failure path: a hung store's rank
            return store.get(self._failure_key).decode() if store.check(
                [self._failure_key]) else None
        except Exception:  # a lost store (its rank gone) is no cause to report
            return None

    def fail(self, exc: Exception) -> None:
        """Record that this rank raised ``exc`` and post it for the others (the first failure
        of the group is the one they report)."""
        if self.timers.failure is None:
            self.timers.failure = exc
        message = f"{self._who()} {type(exc).__name__}: {exc}".splitlines()[0][:1000]
        with suppress(Exception):  # no store: the peers see the closed connection alone
            self.group.get_group_store().compare_set(self._failure_key, "", message)

    @staticmethod
    def _who() -> str:
        return f"rank {dist.get_rank()} failed:"

    def attempt(self, compute: Callable[[], T], stand_in: Callable[[], T]) -> T:
        """``compute()``; if it raises, or this rank has already failed, ``stand_in()`` (zeros
        shaped like the result), so that this rank keeps its place in the exchanges until
        the next all-reduce tells every rank of the failure."""
        if self.timers.failure is None:
            try:
                return compute()
            except Exception as exc:  # re-raised at the next all-reduce
                self.fail(exc)
        return stand_in()

    def _agree(self, failed: float) -> None:
        """Raise on every rank when the all-reduce says that a rank failed (``failed`` > 0)."""
        if not failed:
            return
        first, mine = self._posted(), self.timers.failure
        if mine is not None and (first is None or first.startswith(self._who())):
            raise mine
        raise RankFailed(first or "a rank of the time group failed") from mine

    @contextmanager
    def _timed(self, kind: str) -> Iterator[None]:
        tic = clock(self.device)
        with record_function(f"time_parallel/{kind}"):  # a named range in profiler traces
            try:
                yield
            except Exception as exc:  # a peer gone (closed connection, timeout): name why
                posted = self._posted()
                if posted is None:
                    raise
                raise RankFailed(posted) from exc
        toc = clock(self.device)
        self.timers.seconds[kind] += toc - tic
        if self.timers.log is not None:
            self.timers.log.append((kind, tic, toc))

    def chunk(self, num_slices: int) -> range:
        """The slices this rank owns (in the view's order), a contiguous 1/size of them."""
        if num_slices % self.size:
            raise ValueError(
                f"num_slices={num_slices} is not divisible by the time group size {self.size}"
            )
        per_rank = num_slices // self.size
        return range(self.index * per_rank, (self.index + 1) * per_rank)

    def send_next(self, tensor: torch.Tensor) -> None:
        """Send a boundary state to the rank owning the next chunk, without waiting for it to
        arrive (a blocking send would idle this rank until the next one posts its receive)."""
        with self._timed("comm"):
            work = dist.isend(tensor.detach().clone(), self._global(self.index + 1),
                              group=self.group)
        self.timers.pending.append(work)

    def wait_sends(self) -> None:
        """Wait for this group's sends to complete (their errors surface here)."""
        with self._timed("comm"):
            while self.timers.pending:
                self.timers.pending.pop().wait()

    def settle_sends(self) -> None:
        """On a failed call: let the sends still in flight complete, a few seconds each at
        most, errors ignored (the call's failure is the one to report). A send torn down
        mid-transfer when its process group is destroyed aborts the process (gloo's "terminate
        called without an active exception"); after an agreed failure the receivers have
        posted their receives, so the sends complete."""
        while self.timers.pending:
            work = self.timers.pending.pop()
            with suppress(Exception):
                work.wait(timedelta(seconds=5))

    def recv_prev(self, like: torch.Tensor) -> torch.Tensor:
        """A boundary state (shaped like ``like``) from the rank owning the previous chunk."""
        out = torch.empty_like(like, memory_format=torch.contiguous_format)
        with self._timed("wait"):
            dist.recv(out, self._global(self.index - 1), group=self.group)
        return out

    def max(self, value: float) -> float:
        """The largest ``value`` over the group (NaN counts as +inf, so it always wins)."""
        return self.max_each([value])[0]

    def max_each(self, values: Sequence[float]) -> list[float]:
        """Element by element, the largest ``values`` over the group, in one all-reduce (NaN
        counts as +inf)."""
        values = [math.inf if math.isnan(v) else v for v in values]
        failed = float(self.timers.failure is not None)  # max: whether any rank failed
        buffer = torch.tensor([*values, failed], dtype=torch.float64, device=self.device)
        with self._timed("comm"):
            dist.all_reduce(buffer, dist.ReduceOp.MAX, group=self.group)
        *values, failed = buffer.tolist()
        self._agree(failed)
        return values

    def sum_(
        self,
        tensors: Sequence[torch.Tensor],
        maxima: Sequence[float] = (),
        maxima_dtype: torch.dtype = torch.float64,
    ) -> list[float]:
        """Sum ``tensors`` (on ``device``) over the group, in place, as one flat all-reduce;
        with ``maxima``, also return their largest values over the group (NaN counts as +inf),
        from the same all-reduce.

        A sum cannot take a maximum, so each rank writes its ``maxima`` into its own row of a
        [size, len(maxima)] block that is zero elsewhere: the sum hands every rank every row
        exactly. The all-reduce then runs in the wider of the tensors' dtype and
        ``maxima_dtype`` (float64 keeps any float exact; float32 suffices for integers below
        2**24). One more maximum says whether a rank failed (raised here on every rank).

        Args:
            tensors: summed in place.
            maxima: one number per rank and position, maximised over the group.
            maxima_dtype: the dtype that represents ``maxima`` exactly.
        """
        maxima = [*maxima, float(self.timers.failure is not None)]
        parts = [t.reshape(-1) for t in tensors]
        sizes = [t.numel() for t in tensors]
        dtype = maxima_dtype if not parts else torch.promote_types(parts[0].dtype, maxima_dtype)
        rows = torch.zeros(self.size, len(maxima), dtype=dtype, device=self.device)
        rows[self.index] = torch.tensor([math.inf if math.isnan(v) else v for v in maxima],
                                        dtype=dtype)
        parts = [part.to(dtype) for part in parts] + [rows.reshape(-1)]
        sizes.append(rows.numel())
        flat = torch.cat(parts)
        with self._timed("comm"):
            dist.all_reduce(flat, dist.ReduceOp.SUM, group=self.group)
        pieces = flat.split(sizes)
        for t, part in zip(tensors, pieces, strict=False):
            t.copy_(part.view_as(t))
        *maxima, failed = pieces[-1].view(self.size, -1).amax(dim=0).tolist()
        self._agree(failed)
        return maxima

    def broadcast(self, tensor: torch.Tensor, index: int) -> torch.Tensor:
        """``tensor`` of the rank at position ``index`` (in the view's order), on every rank."""
        out = tensor.contiguous().clone()
        with self._timed("comm"):
            dist.broadcast(out, self._global(index), group=self.group)
        return out

    def all_gather(self, part: torch.Tensor) -> torch.Tensor:
        """Every rank's ``part`` (equal shapes), concatenated on dim 0 in the view's order."""
        parts = [torch.empty_like(part, memory_format=torch.contiguous_format)
                 for _ in range(self.size)]
        with self._timed("comm"):
            dist.all_gather(parts, part.contiguous(), group=self.group)
        return torch.cat(parts[::-1] if self.reverse else parts)


def create_groups(
    time_size: int, timeout: timedelta | None = None, device: torch.device | None = None
) -> tuple[TimeGroup, dist.ProcessGroup]:
    """Split the initialised world into a (data, time) device mesh: time groups of
    ``time_size`` consecutive ranks and data groups across them.

    Collective: every rank must call it, with the same ``time_size``. The mesh has shape
    (world // time_size, time_size) and dimension names ``("data", "time")``, so rank r has
    time index r % time_size and data index r // time_size.

    Args:
        time_size: ranks per time group; must divide the world size.
        timeout: collective timeout of this rank's two groups (None: what torch gives a
            mesh's groups, the world's timeout for a dimension spanning the whole world and
            torch's default for the backend for any other; pass the world's to keep failures
            bounded).
        device: where the time group's tensors live (None: ``TimeGroup``'s default).

    Returns:
        This rank's time group and its data group (the ranks with the same time index).
    """
    world = dist.get_world_size()
    if time_size < 1 or world % time_size:
        raise ValueError(
            f"time_parallel_size={time_size} must be >= 1 and divide the world size {world}"
        )
    device_type = "cuda" if dist.get_backend() == "nccl" else "cpu"
    mesh = init_device_mesh(device_type, (world // time_size, time_size),
                            mesh_dim_names=("data", "time"))
    time_group, data_group = mesh.get_group("time"), mesh.get_group("data")
    if timeout is not None:
        # A mesh's groups get torch's default timeout (30 min on gloo, 10 on NCCL), not the
        # world's; a dimension spanning the world reuses the world group itself.
        for group in (time_group, data_group):
            dist.set_timeout(timeout, group)
    ranks = dist.get_process_group_ranks(time_group)
    return TimeGroup(time_group, ranks, device=device), data_group
