"""The benchmarks' modelled schedule with messages (``benchmarks/_schedule.py``), against
schedules worked out by hand, the parareal speedup formulas and the block's own critical-path
counters."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from _schedule import CommCosts, SliceCosts, modelled_time

from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.vector_fields import MLPVectorField

F, G = 10.0, 1.0


def test_two_ranks_one_iteration_by_hand():
    # message 0.5 (latency only); all-reduce of 2 ranks: 2 rounds -> 1.0; broadcast 0.5.
    # sweep: rank 0 G ends 1, its state arrives 1.5, rank 1 G ends 2.5; check all-reduce 3.5.
    # iteration 1: both F (13.5); rank 0 sends U_1 (arrives 14); rank 1 corrects (G): 15;
    # residual all-reduce 16; broadcast of U_2: 16.5.
    comm = CommCosts(latency=0.5)
    forward = modelled_time(SliceCosts(F, G), 2, 2, 1, comm)
    assert forward.seconds == pytest.approx(16.5)
    assert forward.busy == [G + F, 2 * G + F]
    assert forward.idle == pytest.approx([16.5 - 11, 16.5 - 12])
    # pipelined, no all-reduce until the end, rank 1's sweep step after its F: rank 0 starts F
    # at 1; rank 1 at 1.5 (U_0 arrived), then its sweep's G (12.5) and the correction (13.5;
    # U_1 arrived at 11.5); residuals and U_2 in one all-reduce: 14.5.
    fixed = modelled_time(SliceCosts(F, G), 2, 2, 1, comm, pipelined=True)
    assert fixed.seconds == pytest.approx(14.5)


def test_two_ranks_training_step_by_hand():
    # free messages. forward: sweep 2, iteration 1 ends 13 (rank 1: F, then G).
    # backward, level 1: rank 1 coarse VJP (15), sends to rank 0, fine VJP (35); rank 0
    # receives (15), no coarse VJP (slice 0 < k), fine VJP (35). level 0: rank 1 coarse VJP
    # (37), sends; rank 0 receives (37), coarse VJP (39).
    costs = SliceCosts(F, G, fine_vjp=20.0, coarse_vjp=2.0, overhead=0.25)
    step = modelled_time(costs, 2, 2, 1, train=True)
    assert step.seconds == pytest.approx(39.25)
    assert step.busy == [F + G + 20 + 2, F + 2 * G + 20 + 2 + 2]


def test_messages_and_collectives_add_their_costs():
    # N = P = 2, K = 1 again, bandwidth only: a state of 100 bytes at 100 B/s is 1 s a message;
    # all-reduces of 2 ranks take the ring, 2 rounds of half the message: 0.08 for the 8-byte
    # residual, 1 for 100 bytes of parameter gradients.
    comm = CommCosts(bandwidth=100.0)
    costs = SliceCosts(F, G, 20.0, 2.0, state_bytes=100, param_bytes=100)
    forward = modelled_time(costs, 2, 2, 1, comm)
    # sweep: 1 + 1 (message) + 1; check .08; F; U_1 arrives 1 after rank 0's F; G; .08; 1
    assert forward.seconds == pytest.approx(3 + 0.08 + F + 1 + G + 0.08 + 1)
    step = modelled_time(costs, 2, 2, 1, comm, train=True)
    # critical path: rank 1's coarse VJP (level 1), fine VJP, coarse VJP (level 0), the
    # message to rank 0 (whose fine VJP ended earlier), rank 0's coarse VJP; then one
    # all-reduce of the parameter gradients, dL/dx0 and the check (100 + 100 + 2 x 8 bytes)
    backward = 2 + 20 + 2 + 1 + 2 + 2.16
    assert step.seconds == pytest.approx(forward.seconds + backward)


def test_one_process_is_the_blocks_own_critical_path():
    # units: F = 2 rk4 steps = 8 evaluations, G = 1 Euler step; a VJP re-runs and pulls back
    # (twice the units; F's step states were kept by the forward, so its VJP only rebuilds
    # each step and pulls back: twice too). The block's counters are an independent account
    # of the same work.
    torch.manual_seed(0)
    for iters in range(5):
        block = PararealODEBlock(MLPVectorField(2, 8, 1).double(), 0.0, 1.0, num_slices=4,
                                 fine_steps=2, max_iters=iters, tol=0.0)
        block(torch.randn(3, 2, dtype=torch.float64, requires_grad=True)).sum().backward()
        costs = SliceCosts(fine=8, coarse=1, fine_vjp=16, coarse_vjp=2)
        stats = block.stats
        assert modelled_time(costs, 4, 1, iters).seconds == stats.critical_path_nfe(1)
        step = modelled_time(costs, 4, 1, iters, train=True).seconds
        assert step == stats.critical_path_nfe(1, "total")
        # and with one rank per slice at K = 1 (nothing to overlap in the forward)
        if iters == 1:
            assert modelled_time(costs, 4, 4, 1).seconds == stats.critical_path_nfe(4)


@pytest.mark.parametrize("iters", [1, 2, 3])
def test_one_slice_per_rank_gives_the_textbook_schedules(iters):
    # free messages, P = N: with an all-reduce per iteration each iteration waits for the whole
    # chain of corrections (classic, N G + sum_k F + (N - k) G); without, the pipelined
    # N G + K (F + G) (docs/TIME_PARALLEL.md, cost model: S = N / (N r + K (1 + r))).
    n, costs = 16, SliceCosts(F, G)
    classic = n * G + sum(F + (n - k) * G for k in range(1, iters + 1))
    assert modelled_time(costs, n, n, iters).seconds == pytest.approx(classic)
    pipelined = modelled_time(costs, n, n, iters, pipelined=True).seconds
    assert pipelined == pytest.approx(n * G + iters * (F + G))
    r = G / F
    assert n * F / pipelined == pytest.approx(n / (n * r + iters * (1 + r)))


def test_more_ranks_per_slice_chunk_and_free_messages_never_cost_more():
    costs = SliceCosts(F, G, 2 * F, 2 * G, state_bytes=4096, param_bytes=10**6)
    comm = CommCosts(latency=1e-1, bandwidth=1e6)
    for p in (1, 2, 4, 8):
        free = modelled_time(costs, 8, p, 2, train=True)
        paid = modelled_time(costs, 8, p, 2, comm, train=True)
        assert paid.seconds > free.seconds or p == 1
        assert paid.busy == free.busy  # messages cost time, not work
    # the work is shared: total busy time is the same on 1 and on 4 ranks
    one, four = (modelled_time(costs, 8, p, 2, train=True) for p in (1, 4))
    assert sum(one.busy) == pytest.approx(sum(four.busy))
    assert four.seconds < one.seconds


def test_collective_costs():
    comm = CommCosts(latency=1.0, bandwidth=8.0)
    assert comm.message(16) == 3.0
    assert comm.broadcast(16, 1) == 0.0 and comm.broadcast(16, 5) == 9.0  # 3 rounds
    assert comm.all_reduce(16, 1) == 0.0
    assert comm.all_reduce(16, 4) == min(4 * 3.0, 6 * (1 + 0.5))  # ring wins
    assert comm.all_reduce(0, 4) == 4.0  # latency-bound: doubling wins
    assert comm.all_gather(16, 4) == 9.0


def test_fine_scaled_costs():
    costs = SliceCosts(8.0, 1.0, 16.0, 2.0, state_bytes=64)
    half = costs.fine_scaled(4 / 8)  # the same fine solve in 8 slices instead of 4
    assert (half.fine, half.fine_vjp, half.coarse, half.coarse_vjp) == (4.0, 8.0, 1.0, 2.0)
    assert half.state_bytes == 64


def test_bad_arguments():
    costs = SliceCosts(F, G)
    with pytest.raises(ValueError, match="num_slices=6 must be a positive multiple of ranks=4"):
        modelled_time(costs, 6, 4, 1)
    with pytest.raises(ValueError, match="ranks must be an integer >= 1"):
        modelled_time(costs, 4, 0, 1)
    with pytest.raises(ValueError, match="iters must be an integer in \\[0, num_slices=4\\]"):
        modelled_time(costs, 4, 2, 5)
    with pytest.raises(ValueError, match="fine must be a finite number >= 0"):
        SliceCosts(math.nan, G)
    with pytest.raises(ValueError, match="bandwidth must be > 0"):
        CommCosts(bandwidth=0.0)
