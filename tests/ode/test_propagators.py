"""Propagators: the Newton-solved implicit methods against closed forms, orders, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from pnode_zoo.ode.methods import METHODS
from pnode_zoo.ode.propagators import Propagator, Work

F64 = torch.float64


@pytest.mark.parametrize("method", ["backward_euler", "trapezoid"])
def test_implicit_step_on_a_linear_problem_is_the_closed_form_with_one_solve(
    method, linear_field, stiff
):
    steps, span, batch = 4, 0.3, 3
    field = linear_field(stiff, torch.tensor([1.0, 0.0, -1.0], dtype=F64))
    x0, start = torch.randn(batch, 3, dtype=F64), torch.tensor([0.2], dtype=F64)
    length = torch.tensor([span], dtype=F64)
    work = Work()
    with torch.no_grad():
        out = Propagator(method, steps, newton_tol=1e-12)(field, start, length, x0, work)
    theta = METHODS[method].theta
    h, eye, a, b = span / steps, torch.eye(3, dtype=F64), field.a.detach(), field.b.detach()
    x = x0
    for i in range(steps):
        t_i, t_next = 0.2 + i * h, 0.2 + (i + 1) * h
        rhs = x @ (eye + h * (1 - theta) * a).T + h * ((1 - theta) * t_i + theta * t_next) * b
        x = torch.linalg.solve(eye - h * theta * a, rhs.T).T
    assert (out - x).abs().max() <= 1e-12 * x.abs().max()
    # Newton on a linear problem: one iteration per step, then the residual is at rounding level
    # (well below 1e-12; the default tolerance, 10 epsilons, is close to the rounding floor)
    assert work.newton_iters == steps
    assert work.linear_solves == steps * batch
    assert work.nfe == 3 * steps + (method == "trapezoid")  # residual, Jacobian, residual (+ f0)


@pytest.mark.parametrize(("method", "order"), [("backward_euler", 1), ("trapezoid", 2)])
def test_implicit_order_on_a_nonlinear_problem(method, order):
    # x' = -x^2, x(t) = x0 / (1 + x0 t), per sample
    x0 = torch.tensor([[0.5], [1.0], [2.0]], dtype=F64)
    start, span = torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64)
    exact = x0 / (1 + x0)
    errors = []
    for steps in (8, 16, 32):
        out = Propagator(method, steps)(lambda t, x: -x * x, start, span, x0, Work())
        errors.append((out - exact).abs().max().item())
    observed = math.log2(errors[-2] / errors[-1])
    assert abs(observed - order) < 0.1, errors


@pytest.mark.parametrize("method", ["backward_euler", "trapezoid"])
def test_implicit_step_gradients_by_finite_differences(method):
    # differentiable through the implicit function theorem, not through the Newton iterations
    a0 = torch.tensor([[-1.0, 0.5], [0.3, -2.0]], dtype=F64)

    def solve(x, a):
        return Propagator(method, 3)(
            lambda t, y: torch.tanh(y @ a.T) + t, torch.tensor([0.1], dtype=F64),
            torch.tensor([0.7], dtype=F64), x, Work(),
        )

    x = torch.randn(2, 2, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(solve, (x, a0.clone().requires_grad_()))


def test_adaptive_solve_of_stacked_slices_controls_each_slices_error():
    # 64 slices stacked, one of them a fast rotation. An RMS norm over the whole batch would
    # dilute that slice's error estimate 8x; the per-slice norm keeps its error as when alone.
    omega = torch.full((64, 1), 0.1, dtype=F64)
    omega[5] = 20.0
    x0 = torch.tensor([[1.0, 0.0]] * 64, dtype=F64)
    exact = torch.tensor([math.cos(20.0), -math.sin(20.0)], dtype=F64)
    propagator = Propagator("bosh3", rtol=1e-6, atol=1e-9)

    def solve(x, rate, groups):
        def rotate(t, y):
            return rate * torch.stack([y[:, 1], -y[:, 0]], dim=1)

        work = Work()
        starts, spans = torch.zeros(groups, dtype=F64), torch.ones(groups, dtype=F64)
        out = propagator(rotate, starts, spans, x, work)
        return (out[5 % len(x)] - exact).norm().item(), work.nfe

    alone = solve(x0[5:6], omega[5:6], 1)
    batched, diluted = solve(x0, omega, 64), solve(x0, omega, 1)
    assert batched[1] == alone[1] and batched[0] <= 1.01 * alone[0]
    assert diluted[1] < 0.7 * alone[1] and diluted[0] > 2 * alone[0]  # what it would be without
