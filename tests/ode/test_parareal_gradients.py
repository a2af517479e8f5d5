"""Gradients through the parareal block: gradcheck, torchdiffeq, inexact parareal backward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.vector_fields import MLPVectorField

F64 = torch.float64


def _mlp() -> nn.Module:
    return MLPVectorField(2, hidden=4, layers=1).double()


def _gradcheck(block: PararealODEBlock, x0: torch.Tensor, fast_mode: bool = True) -> None:
    params = tuple(block.parameters())

    def run(x, *_):  # parameters are perturbed in place by gradcheck
        return block(x)

    inputs = (x0.requires_grad_(), *params)
    assert torch.autograd.gradcheck(run, inputs, atol=1e-7, rtol=1e-5, fast_mode=fast_mode)


@pytest.mark.parametrize("per_slice", [False, True])
@pytest.mark.parametrize("backward", ["serial", "parareal"])
@pytest.mark.parametrize("trajectory", [False, True])
def test_gradcheck(per_slice, backward, trajectory):
    n = 3
    func = [_mlp() for _ in range(n)] if per_slice else _mlp()
    block = PararealODEBlock(
        func, 0.0, 1.0, n, fine_steps=2, tol=0.0, backward=backward,
        return_trajectory=trajectory,
    )
    # the full Jacobian once; random projections (fast mode) for the other combinations
    full = not per_slice and backward == "parareal" and not trajectory
    _gradcheck(block, torch.randn(2, 2, dtype=F64), fast_mode=not full)


def test_gradcheck_implicit_propagators():
    block = PararealODEBlock(
        _mlp(), 0.0, 1.0, 3, coarse="backward_euler", fine="trapezoid", fine_steps=2, tol=0.0,
        return_trajectory=True,
    )
    _gradcheck(block, torch.randn(2, 2, dtype=F64))


@pytest.mark.parametrize("backward", ["serial", "parareal"])
@pytest.mark.parametrize("trajectory", [False, True])
def test_output_and_gradients_match_torchdiffeq(backward, trajectory):
    n, steps, t0, t1 = 4, 3, 0.5, 2.0
    field = MLPVectorField(3, hidden=16, layers=2).double()
    x0 = torch.randn(5, 3, dtype=F64)
    weights = torch.randn(n + 1, 5, 3, dtype=F64)  # a loss that sees every boundary
    params = list(field.parameters())

    def loss(states):
        return (weights * states).sum() if trajectory else (weights[-1] * states).sum()

    x = x0.clone().requires_grad_()
    block = PararealODEBlock(
        field, t0, t1, n, fine_steps=steps, tol=0.0, backward=backward,
        return_trajectory=trajectory,
    )
    out = block(x)
    grads = torch.autograd.grad(loss(out), [x, *params])

    x_ref = x0.clone().requires_grad_()
    times = torch.linspace(t0, t1, n + 1, dtype=F64)
    ref = odeint(field, x_ref, times, method="rk4", options={"step_size": (t1 - t0) / (n * steps)})
    ref = ref if trajectory else ref[-1]
    grads_ref = torch.autograd.grad(loss(ref), [x_ref, *params])

    assert (out - ref).abs().max() <= 1e-12
    for g, g_ref in zip(grads, grads_ref, strict=True):
        assert (g - g_ref).abs().max() <= 1e-11 * (1 + g_ref.abs().max())


def test_per_slice_parameter_gradients_match_a_serial_autograd_solve():
    n, steps = 3, 2
    fields = [MLPVectorField(3, hidden=8, layers=1).double() for _ in range(n)]
    x0 = torch.randn(4, 3, dtype=F64)
    block = PararealODEBlock(fields, 0.0, 1.0, fine_steps=steps, tol=0.0)
    block(x0).square().sum().backward()
    ours = [p.grad.clone() for p in block.parameters()]
    block.zero_grad()
    x = x0
    for i, f in enumerate(fields):
        ts = torch.tensor([i / n, (i + 1) / n], dtype=F64)
        x = odeint(f, x, ts, method="rk4", options={"step_size": 1 / (n * steps)})[-1]
    x.square().sum().backward()
    for g, p in zip(ours, block.parameters(), strict=True):
        assert (g - p.grad).abs().max() <= 1e-12


def test_inexact_parareal_backward_error_shrinks_with_iterations():
    n = 8
    field = MLPVectorField(3, hidden=16, layers=2).double()
    x0 = torch.randn(4, 3, dtype=F64)

    def gradient(**kwargs) -> torch.Tensor:
        block = PararealODEBlock(field, 0.0, 2.0, n, tol=0.0, backward_tol=0.0, **kwargs)
        x = x0.clone().requires_grad_()
        block(x).square().sum().backward()
        return torch.cat([x.grad.flatten(), *(p.grad.flatten() for p in field.parameters())])

    field.zero_grad()
    exact = gradient(backward="serial")
    errors = []
    for k in range(n + 1):
        field.zero_grad()
        approx = gradient(backward="parareal", backward_max_iters=k)
        errors.append(((approx - exact).norm() / exact.norm()).item())
    # k = 0 (coarse adjoint only) is off by percents; every iteration gains at least 10x
    # until rounding; k = N is the exact adjoint.
    assert errors[0] > 1e-3
    for k in range(n - 1):
        assert errors[k + 1] < 0.1 * errors[k] or errors[k + 1] < 1e-14, errors
    assert errors[n] < 1e-14, errors
