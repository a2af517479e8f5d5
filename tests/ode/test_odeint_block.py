"""The plain torchdiffeq block: final state and trajectory output against exact solutions."""

import math

import pytest
import torch
from torch import nn

from pnode_zoo.ode import ODEBlock


class Linear(nn.Module):
    """dx/dt = -x, x(t) = x0 exp(-t)."""

    def forward(self, t, x):
        return -x


@pytest.mark.parametrize(("method", "steps", "atol"), [("rk4", 30, 1e-7), ("dopri5", 1, 1e-9)])
def test_trajectory_output_is_the_solution_at_equally_spaced_times(method, steps, atol):
    x0 = torch.tensor([[1.0, -2.0]], dtype=torch.float64)
    block = ODEBlock(Linear(), 0.0, 1.5, method, steps, rtol=1e-10, atol=1e-12,
                     return_trajectory=True, num_intervals=15)
    path = block(x0)
    times = torch.linspace(0.0, 1.5, 16, dtype=torch.float64)
    assert path.shape == (16, 1, 2)
    assert torch.allclose(path, x0 * torch.exp(-times)[:, None, None], rtol=0, atol=atol)
    assert torch.allclose(block.times.double(), times, atol=1e-6)


def test_fixed_grid_takes_exactly_the_requested_steps():
    # 0.1-spaced times are not multiples of a float step: torchdiffeq's step_size grid would
    # add a sliver step, the block's grid must not.
    block = ODEBlock(Linear(), 0.0, 1.4, "rk4", 28, return_trajectory=True, num_intervals=14)
    x0 = torch.ones(3, 2)
    block(x0)
    assert block.nfe == 4 * 28
    final = ODEBlock(Linear(), 0.0, 1.4, "rk4", 28)(x0)
    assert torch.allclose(final, x0 * math.exp(-1.4), atol=1e-6)


def test_fixed_grid_steps_must_divide_into_the_output_intervals():
    with pytest.raises(ValueError, match="multiple of num_intervals"):
        ODEBlock(Linear(), 0.0, 1.0, "rk4", 5, return_trajectory=True, num_intervals=2)
