"""The statistics and the critical-path cost model, against counts worked out by hand."""

from __future__ import annotations

import pytest
import torch

from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.vector_fields import MLPVectorField

F64 = torch.float64


def _run(**kwargs) -> PararealODEBlock:
    block = PararealODEBlock(MLPVectorField(2, 8, 1).double(), 0.0, 1.0, 4, **kwargs)
    x = torch.randn(3, 2, dtype=F64, requires_grad=True)
    block(x).sum().backward()
    return block


def test_forward_critical_path_by_hand():
    # N = 4, K = 2, G = 1 Euler step (1 unit), F = 2 rk4 steps (8 units per slice).
    # sweep: 4; iteration 1: fine slices 0-3, coarse slices 1-3; iteration 2: fine slices 1-3,
    # coarse slices 2-3. A rank's fine work is (its slices in the batch) x 8.
    stats = _run(coarse="euler", fine="rk4", fine_steps=2, max_iters=2, tol=0.0).stats
    assert stats.forward_iters == 2 and len(stats.forward_residuals) == 2
    assert stats.critical_path_nfe(1) == 4 + 32 + 3 + 24 + 2
    assert stats.critical_path_nfe(2) == 4 + 16 + 3 + 16 + 2  # ranks own slices {0,1}, {2,3}
    assert stats.critical_path_nfe(4) == 4 + 8 + 3 + 8 + 2
    assert stats.serial_fine_nfe() == 32
    assert stats.modelled_speedup(4) == pytest.approx(32 / 25)
    # f calls, forward + backward: coarse 4 + 3 + 2, then one coarse graph per slice (4);
    # fine 2 x 8, then 4 adjoint iterations and the parameter VJP recompute 8 each
    assert stats.backward_iters == 4
    assert stats.nfe_coarse == 9 + 4 and stats.nfe_fine == 16 + 5 * 8


def test_backward_critical_path_by_hand():
    # serial adjoint: 4 slices one after the other, each recompute (8) + VJP (8)
    serial = _run(fine_steps=2, backward="serial", tol=0.0).stats
    assert serial.backward_iters == 0
    assert serial.critical_path_nfe(4, "backward") == 4 * 16
    total = serial.critical_path_nfe(4, "forward") + 4 * 16
    assert serial.critical_path_nfe(4, "total") == total
    # parareal adjoint with 1 iteration: coarse VJP sweep (graph 1 + VJP 1, per slice),
    # fine VJPs of all slices (16 per rank), coarse VJPs of slices 2,1,0 (1 each), then the
    # parameter VJP over all slices (16 per rank).
    inexact = _run(fine_steps=2, backward_max_iters=1, backward_tol=0.0, tol=0.0).stats
    assert inexact.backward_iters == 1 and len(inexact.backward_residuals) == 1
    assert inexact.critical_path_nfe(4, "backward") == 4 * 2 + 16 + 3 + 16


def test_bad_cost_model_arguments():
    stats = _run(max_iters=1).stats
    with pytest.raises(ValueError, match="ranks must be an integer in \\[1, num_slices=4\\]"):
        stats.critical_path_nfe(8)
    with pytest.raises(ValueError, match="phase must be"):
        stats.critical_path_nfe(2, "sideways")
