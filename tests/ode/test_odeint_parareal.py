"""``odeint_parareal`` against torchdiffeq: fields written for torchdiffeq plug in unchanged."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from pnode_zoo.ode import PararealODEBlock, odeint_parareal

F64 = torch.float64


class TimeDecay(nn.Module):
    """f(t, x) = -2 a t x, written as for torchdiffeq: t is 0-d (x(t) = x0 exp(-a t^2))."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor(1.0, dtype=F64))

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        assert t.dim() == 0, "a torchdiffeq field is called with one time"
        return -2 * self.a * t * x


class SpiralDemoField(nn.Module):
    """The learned field of torchdiffeq's ode_demo: an MLP of y**3 (2 -> 50 -> 2, tanh)."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2, 50), nn.Tanh(), nn.Linear(50, 2)).double()

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(y**3)


class LatentField(nn.Module):
    """The latent field of torchdiffeq's latent_ode example: three linear layers with in-place
    ELUs between them, and a counter of its calls."""

    def __init__(self, latent_dim: int = 4, hidden: int = 20) -> None:
        super().__init__()
        self.elu = nn.ELU(inplace=True)
        self.fc1, self.fc2 = nn.Linear(latent_dim, hidden), nn.Linear(hidden, hidden)
        self.fc3 = nn.Linear(hidden, latent_dim)
        self.nfe = 0
        self.double()

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.nfe += 1
        return self.fc3(self.elu(self.fc2(self.elu(self.fc1(x)))))


def _fine_grid(t: torch.Tensor, steps: int) -> torch.Tensor:
    """``steps`` equal steps inside every interval of t: the fine solver's grid."""
    inner = [torch.linspace(float(a), float(b), steps + 1, dtype=F64)[:-1]
             for a, b in zip(t[:-1], t[1:], strict=True)]
    return torch.cat([*inner, t[-1:]])


def test_non_autonomous_field_equals_torchdiffeq_and_the_closed_form():
    field, x0 = TimeDecay(), torch.randn(4, 3, dtype=F64)
    t = torch.tensor([0.0, 0.3, 0.5, 1.2, 2.0], dtype=F64)  # uneven intervals
    steps = 10
    out = odeint_parareal(field, x0, t, num_slices=8, fine_steps=steps // 2, tol=0.0)
    ref = odeint(field, x0, _fine_grid(t, steps), method="rk4")[::steps]
    assert out.shape == (len(t), *x0.shape)
    assert (out - ref).abs().max() <= 1e-12
    exact = x0 * torch.exp(-t**2)[:, None, None]
    assert (out - exact).abs().max() <= 1e-5  # rk4, 5 steps per slice
    # the block is the same solve on a uniform grid
    block = PararealODEBlock(field, 0.0, 2.0, num_slices=4, fine_steps=7, tol=0.0,
                             return_trajectory=True)
    ref = odeint(field, x0, torch.linspace(0.0, 2.0, 29, dtype=F64), method="rk4")[::7]
    assert (block(x0) - ref).abs().max() <= 1e-12


@pytest.mark.parametrize("backward", ["unrolled", "fine_adjoint", "parareal_adjoint"])
def test_latent_ode_field_plugs_in_unchanged(backward):
    torch.manual_seed(0)
    field = LatentField()
    z0 = torch.randn(8, 4, dtype=F64)
    t = torch.sort(torch.rand(7, dtype=F64) * 3).values  # irregular observation times
    weights = torch.randn(7, 8, 4, dtype=F64)
    steps = 4

    def gradients(solution, z):
        return torch.autograd.grad((weights * solution).sum(), [z, *field.parameters()])

    z = z0.clone().requires_grad_()
    ours = odeint_parareal(field, z, t, fine_steps=steps, tol=0.0, backward=backward)
    grads = gradients(ours, z)
    assert field.nfe > 0  # the field's own counter still counts (once per vmapped call)
    z_ref = z0.clone().requires_grad_()
    ref = odeint(field, z_ref, _fine_grid(t, steps), method="rk4")[::steps]
    assert (ours - ref).abs().max() <= 1e-12
    for g, g_ref in zip(grads, gradients(ref, z_ref), strict=True):
        assert (g - g_ref).abs().max() <= 1e-10 * (1 + g_ref.abs().max())


def test_spiral_demo_field_with_its_batch_shape_and_an_adaptive_fine_solver():
    # ode_demo's batches are [batch, 1, 2]; dopri5 as the fine solver, one Euler coarse step
    torch.manual_seed(0)
    field, y0 = SpiralDemoField(), torch.randn(5, 1, 2, dtype=F64) * 0.5
    t = torch.linspace(0.0, 2.0, 6, dtype=F64)
    tight = {"rtol": 1e-10, "atol": 1e-12}
    ours = odeint_parareal(field, y0, t, fine="dopri5", tol=1e-9, **tight)
    ref = odeint(field, y0, t, method="dopri5", **tight)
    assert ours.shape == ref.shape == (6, 5, 1, 2)
    assert (ours - ref).abs().max() <= 1e-8


def test_gradient_by_finite_differences_at_few_iterations():
    field, x0 = TimeDecay(), torch.randn(2, 2, dtype=F64)
    t = torch.tensor([0.0, 0.4, 1.0, 1.5], dtype=F64)

    def solve(x, a):
        return odeint_parareal(lambda s, y: -2 * a * s * y, x, t, adjoint_params=[a],
                               fine_steps=3, max_iters=1, tol=0.0)

    a = field.a.detach().clone().requires_grad_()
    assert torch.autograd.gradcheck(solve, (x0.requires_grad_(), a))


@pytest.mark.parametrize(
    ("t", "kwargs", "match"),
    [
        (torch.tensor([0.0, 1.0, 0.5], dtype=F64), {}, "t must be finite and strictly increasing"),
        (torch.tensor([0.0], dtype=F64), {}, "t must be a 1-d floating-point tensor of at least"),
        (torch.tensor([0.0, 1.0, 2.0], dtype=F64), {"num_slices": 3}, "multiple of the 2 interv"),
        (torch.tensor([0.0, 1.0], dtype=F64), {"warm_start": True}, "warm_start needs a Parare"),
    ],
)
def test_bad_times_and_options(t, kwargs, match):
    with pytest.raises(ValueError, match=match):
        odeint_parareal(TimeDecay(), torch.ones(1, 1, dtype=F64), t, **kwargs)
