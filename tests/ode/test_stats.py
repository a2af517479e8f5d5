"""The statistics and the critical-path cost model, against counts worked out by hand."""

from __future__ import annotations

import pytest
import torch

from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.vector_fields import MLPVectorField

F64 = torch.float64


def _run(**kwargs) -> PararealODEBlock:
    block = PararealODEBlock(MLPVectorField(2, 8, 1).double(), 0.0, 1.0, num_slices=4, **kwargs)
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    block(x).sum().backward()
    return block


def test_forward_critical_path_by_hand():
    # N = 4, K = 2, G = 1 Euler step (1 unit), F = 2 rk4 steps (8 units per slice).
    # sweep: 4; iteration 1: fine slices 0-3, coarse slices 1-3; iteration 2: fine slices 1-3,
    # coarse slices 2-3. A rank's fine work is (its slices in the batch) x 8.
    stats = _run(fine_steps=2, max_iters=2, tol=0.0, backward="parareal_adjoint").stats
    assert stats.forward_iters == 2 and len(stats.forward_residuals) == 2
    assert stats.critical_path_nfe(1) == 4 + 32 + 3 + 24 + 2
    assert stats.critical_path_nfe(2) == 4 + 16 + 3 + 16 + 2  # ranks own slices {0,1}, {2,3}
    assert stats.critical_path_nfe(4) == 4 + 8 + 3 + 8 + 2
    assert stats.serial_fine_nfe() == 32
    assert stats.modelled_speedup(4) == pytest.approx(32 / 25)
    # f calls, forward + backward: coarse 4 + 3 + 2, then one coarse graph per slice (4);
    # fine 2 x 8, then one re-run of F on all slices with no graph, saving each step's state
    # (8), and 4 adjoint iterations and the parameter VJP each rebuilding the steps' graphs (8)
    assert stats.backward_iters == 4
    assert stats.nfe_coarse == 9 + 4 and stats.nfe_fine == 16 + 8 + 5 * 8
    assert not stats.converged and stats.tol == 0.0


def test_unrolled_backward_mirrors_the_forward():
    # K = 2: coarse VJP sweeps over slices 3-2 (level 2), 3-1 (level 1), 3-0 (level 0), each
    # VJP a re-run (1) and a pull-back (1); batched fine VJPs of slices 1-3 and 0-3, each
    # rebuilding its steps' graphs from the step states the forward kept (8) and a pull-back
    # (8): no re-run.
    stats = _run(fine_steps=2, max_iters=2, tol=0.0, backward="unrolled").stats
    assert stats.backward_iters == 2
    coarse = 2 * (2 + 3 + 4)
    assert stats.critical_path_nfe(1, "backward") == coarse + 16 * 3 + 16 * 4
    assert stats.critical_path_nfe(2, "backward") == coarse + 16 * 2 + 16 * 2
    assert stats.critical_path_nfe(4, "backward") == coarse + 16 + 16
    assert stats.nfe_coarse == 9 + 9 and stats.nfe_fine == 16 + 2 * 8
    # the forward's own graphs kept: no re-run, the pull-backs alone (1 per coarse VJP)
    kept = _run(fine_steps=2, max_iters=2, tol=0.0, backward="unrolled", recompute=False).stats
    assert kept.critical_path_nfe(4, "backward") == coarse // 2 + 8 + 8
    assert kept.nfe_coarse == 9 and kept.nfe_fine == 16


def test_backward_critical_path_by_hand():
    # fine adjoint: 4 slices one after the other, each re-run by steps (8 + 8) + VJP (8)
    serial = _run(fine_steps=2, backward="fine_adjoint", tol=0.0).stats
    assert serial.backward_iters == 0
    assert serial.critical_path_nfe(4, "backward") == 4 * 24
    total = serial.critical_path_nfe(4, "forward") + 4 * 24
    assert serial.critical_path_nfe(4, "total") == total
    # parareal adjoint with 1 iteration: coarse VJP sweep (graph 1 + VJP 1, per slice), one
    # re-run of F saving its step states (8 per rank), fine VJPs of all slices rebuilding the
    # steps (16 per rank), coarse VJPs of slices 2,1,0 (1 each), then the parameter VJP over
    # all slices (16 per rank).
    inexact = _run(fine_steps=2, backward="parareal_adjoint", backward_max_iters=1,
                   backward_tol=0.0, tol=0.0).stats
    assert inexact.backward_iters == 1 and len(inexact.backward_residuals) == 1
    assert inexact.critical_path_nfe(4, "backward") == 4 * 2 + 8 + 16 + 3 + 16


def test_timeline_covers_every_solve():
    stats = _run(fine_steps=2, max_iters=2, tol=0.0).stats
    kinds = [kind for kind, _, _ in stats.timeline]
    # forward: 9 coarse steps, 2 fine solves; backward: 9 coarse re-runs + VJPs, 2 fine VJPs
    # (from the forward's step states: no fine re-run)
    assert kinds.count("coarse") == 9 + 2 * 9 and kinds.count("fine") == 2 + 2
    assert all(start <= stop for _, start, stop in stats.timeline)
    coarse = sum(stop - start for kind, start, stop in stats.timeline if kind == "coarse")
    assert coarse == pytest.approx(stats.time_coarse)


def test_bad_cost_model_arguments():
    stats = _run(max_iters=1).stats
    with pytest.raises(ValueError, match="ranks must be an integer in \\[1, num_slices=4\\]"):
        stats.critical_path_nfe(8)
    with pytest.raises(ValueError, match="phase must be"):
        stats.critical_path_nfe(2, "sideways")
