"""Per-sample output times: the solve in observation index s against analytic solutions in t."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from pnode_zoo.ode import IrregularTimeField, ODEBlock, PararealODEBlock, PararealOptions

F64 = torch.float64


class Cosine(nn.Module):
    """f(t, x) = cos(t) in every component: x(t) = x(0) + sin(t)."""

    time_per_sample = True

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.cos(t)[:, None].expand_as(x)


class Ones(nn.Module):
    """f(t, x) = 1."""

    time_per_sample = True

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(x)


def _gaps(batch: int, intervals: int) -> torch.Tensor:
    return torch.empty(batch, intervals, dtype=F64).uniform_(0.1, 1.5)  # ratios up to 15


def _solve(field: nn.Module, x0: torch.Tensor, gaps: torch.Tensor, steps: int) -> torch.Tensor:
    """x at every knot, [batch, H + 1, dim], by the plain block in s."""
    dim, intervals = x0.shape[1], gaps.shape[1]
    block = ODEBlock(IrregularTimeField(field, dim), 0.0, float(intervals), "rk4",
                     steps * intervals, return_trajectory=True, num_intervals=intervals)
    return block(torch.cat([x0, gaps], dim=1))[:, :, :dim].transpose(0, 1)


def _exact(rotation: torch.Tensor, x0: torch.Tensor, gaps: torch.Tensor) -> torch.Tensor:
    """x' = A x at every sample's own times: exp(A t_k) x0, [batch, H + 1, dim]."""
    times = torch.cat([torch.zeros(len(gaps), 1, dtype=F64), gaps.cumsum(1)], dim=1)
    return torch.einsum("bkij,bj->bki", torch.linalg.matrix_exp(rotation * times[..., None, None]),
                        x0)


def test_linear_system_at_each_samples_own_times_to_fourth_order(linear_field, rotation):
    gaps = _gaps(5, 6)
    x0 = torch.randn(5, 2, dtype=F64)
    exact = _exact(rotation, x0, gaps)
    errors = [(_solve(linear_field(rotation), x0, gaps, steps) - exact).abs().max()
              for steps in (16, 32)]
    assert errors[1] < 1e-5
    assert 12 < errors[0] / errors[1] < 20  # RK4's 2**4: the time map is smooth enough


def test_time_dependent_field_sees_the_samples_time():
    gaps = _gaps(4, 5)
    x0 = torch.randn(4, 3, dtype=F64)
    path = _solve(Cosine(), x0, gaps, steps=32)
    times = torch.cat([torch.zeros(4, 1, dtype=F64), gaps.cumsum(1)], dim=1)
    torch.testing.assert_close(path, x0[:, None] + torch.sin(times)[..., None], rtol=1e-7,
                               atol=1e-7)


def test_equal_gaps_are_the_plain_solve_step_for_step(linear_field, rotation):
    gap, intervals, steps = 0.7, 4, 2
    x0 = torch.randn(3, 2, dtype=F64)
    field = linear_field(rotation, torch.tensor([0.3, -0.2], dtype=F64))
    path = _solve(field, x0, torch.full((3, intervals), gap, dtype=F64), steps)
    plain = odeint(field, x0, torch.arange(intervals + 1, dtype=F64) * gap, method="rk4",
                   options={"step_size": gap / steps})
    torch.testing.assert_close(path, plain.transpose(0, 1), rtol=1e-12, atol=1e-12)


def test_time_map_is_increasing_for_uneven_gaps():
    gaps = _gaps(64, 8)
    field = IrregularTimeField(Ones(), 1)  # with f = 1 the field is the speed dt/ds itself
    state = torch.cat([torch.zeros(64, 1, dtype=F64), gaps], dim=1)
    speeds = torch.stack([field(s, state)[:, 0] for s in torch.linspace(0, 8, 801, dtype=F64)])
    assert (speeds > 0).all()


@pytest.mark.parametrize("coarse", ["euler", "rk4"])
def test_parareal_converges_to_the_analytic_solution(linear_field, rotation, coarse):
    gaps = _gaps(3, 8)
    x0 = torch.randn(3, 2, dtype=F64)
    options = PararealOptions(num_slices=8, coarse=coarse, fine="rk4", fine_steps=32, tol=1e-10)
    block = PararealODEBlock(IrregularTimeField(linear_field(rotation), 2), 0.0, 8.0, options,
                             return_trajectory=True)
    path = block(torch.cat([x0, gaps], dim=1))[:, :, :2].transpose(0, 1)
    torch.testing.assert_close(path, _exact(rotation, x0, gaps), rtol=0, atol=1e-5)
