"""Forward parareal: exactness, the exact prefix, convergence order, stiffness, batching."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.propagators import Propagator, Work
from pnode_zoo.ode.vector_fields import ConvVectorField, MLPVectorField

F64 = torch.float64


def _mlp(dim: int = 3) -> nn.Module:
    return MLPVectorField(dim, hidden=16, layers=2).double()


class _Counted(nn.Module):
    """Counts calls of a field and records the shapes of the states and times it sees."""

    def __init__(self, func: nn.Module, time_per_sample: bool = False) -> None:
        super().__init__()
        self.func, self.shapes, self.time_shapes = func, [], []
        self.time_per_sample = time_per_sample

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(x.shape))
        self.time_shapes.append(tuple(t.shape))
        return self.func(t, x)


def _serial_rk4(fields, x0, t0, t1, steps):
    """Serial fine reference: torchdiffeq rk4 slice by slice (one field per slice)."""
    n, states = len(fields), [x0]
    span = (t1 - t0) / n
    for i, f in enumerate(fields):
        ts = torch.tensor([t0 + i * span, t0 + (i + 1) * span], dtype=F64)
        options = {"step_size": span / steps}
        states.append(odeint(f, states[-1], ts, method="rk4", options=options)[-1])
    return torch.stack(states)


def _serial_propagator(fields, x0, t0, t1, propagator):
    """Serial fine reference for implicit F: the propagator applied slice after slice."""
    n, states = len(fields), [x0]
    span = (t1 - t0) / n
    for i, f in enumerate(fields):
        start, length = torch.tensor([t0 + i * span], dtype=F64), torch.tensor([span], dtype=F64)
        states.append(propagator(lambda t, x, f=f: f(t[0], x), start, length, states[-1], Work()))
    return torch.stack(states)


@pytest.mark.parametrize("per_slice", [False, True])
@pytest.mark.parametrize("fine", ["rk4", "trapezoid"])
def test_max_iters_n_is_the_serial_fine_solve(per_slice, fine):
    n, steps = 5, 3
    fields = [_mlp() for _ in range(n)] if per_slice else [_mlp()] * n
    x0 = torch.randn(4, 3, dtype=F64)
    block = PararealODEBlock(
        fields if per_slice else fields[0], 0.2, 1.7, num_slices=n, fine=fine, fine_steps=steps,
        max_iters=n, tol=0.0, return_trajectory=True,
    )
    with torch.no_grad():
        out = block(x0)
        if fine == "rk4":
            ref = _serial_rk4(fields, x0, 0.2, 1.7, steps)
        else:
            ref = _serial_propagator(fields, x0, 0.2, 1.7, Propagator("trapezoid", steps))
    assert block.stats.forward_iters == n
    assert (out - ref).abs().max() <= 1e-12


def test_implicit_fine_matches_closed_form(linear_field, rotation):
    # Backward Euler on x' = A x + t b: (I - hA) y = x + h t_1 b, step by step.
    n, steps, t0, t1 = 4, 3, 0.0, 1.0
    field = linear_field(rotation, torch.tensor([1.0, -2.0], dtype=F64))
    x0 = torch.randn(3, 2, dtype=F64)
    block = PararealODEBlock(
        field, t0, t1, num_slices=n, coarse="euler", fine="backward_euler", fine_steps=steps,
        tol=0.0, return_trajectory=True,
    )
    with torch.no_grad():
        out = block(x0)
        h, x, ref = (t1 - t0) / (n * steps), x0, [x0]
        matrix = torch.eye(2, dtype=F64) - h * field.a
        for i in range(1, n * steps + 1):
            x = torch.linalg.solve(matrix, (x + h * (t0 + i * h) * field.b).T).T
            if i % steps == 0:
                ref.append(x)
    assert (out - torch.stack(ref)).abs().max() <= 1e-12


def test_after_k_iterations_the_first_k_boundaries_are_fine():
    n, steps = 6, 4
    field, x0 = _mlp(), torch.randn(5, 3, dtype=F64)
    with torch.no_grad():
        ref = _serial_rk4([field] * n, x0, 0.0, 4.0, steps)
        for k in range(n + 1):
            block = PararealODEBlock(
                field, 0.0, 4.0, num_slices=n, fine_steps=steps, max_iters=k, tol=0.0,
                return_trajectory=True,
            )
            out = block(x0)
            assert block.stats.forward_iters == k
            error = (out - ref).flatten(1).abs().amax(dim=1)
            assert error[: k + 1].max() <= 1e-14, (k, error)
            if k < n - 1:  # not trivially converged: the next boundary is still off
                assert error[k + 1] > 1e-11, (k, error)


@pytest.mark.parametrize(("coarse", "order", "iters"), [("euler", 1, 4), ("midpoint", 2, 3)])
def test_error_order_is_k_plus_one_times_coarse_order(linear_field, rotation, coarse, order, iters):
    # Gander & Vandewalle (2007): with N and T fixed, the error against the fine solution after
    # k iterations is O(h_G^(p(k+1))) for a coarse method of order p with step h_G.
    n, t1, fine_steps = 8, 2.0, 32
    field, x0 = linear_field(rotation), torch.tensor([[1.0, 0.5]], dtype=F64)
    with torch.no_grad():
        ref = _serial_rk4([field] * n, x0, 0.0, t1, fine_steps)[-1]
        exact = x0 @ torch.linalg.matrix_exp(t1 * field.a).T
        assert (ref - exact).abs().max() < 1e-8  # the fine solution is the analytic one
        coarse_steps = [2, 4, 8] if order == 2 else [4, 8, 16]
        for k in range(iters):
            errors = []
            for m in coarse_steps:
                block = PararealODEBlock(
                    field, 0.0, t1, num_slices=n, coarse=coarse, coarse_steps=m,
                    fine_steps=fine_steps, max_iters=k, tol=0.0,
                )
                errors.append((block(x0) - ref).norm().item())
            observed = math.log2(errors[-2] / errors[-1])
            assert abs(observed - order * (k + 1)) < 0.25, (k, errors, observed)


def test_stiff_problem_needs_an_implicit_coarse_solver(linear_field, stiff):
    n, steps, batch = 10, 20, 2
    field, x0 = linear_field(stiff), torch.randn(batch, 3, dtype=F64)
    exact = x0 @ torch.linalg.matrix_exp(stiff).T

    def run(coarse: str) -> tuple[PararealODEBlock, torch.Tensor]:
        block = PararealODEBlock(
            field, 0.0, 1.0, num_slices=n, coarse=coarse, fine="trapezoid", fine_steps=steps,
            max_iters=3, tol=0.0, newton_tol=1e-12,
        )
        with torch.no_grad():
            return block, block(x0)

    explicit, out_explicit = run("euler")  # |1 + h*lambda| = 99 per slice
    implicit, out_implicit = run("backward_euler")
    assert (out_explicit - exact).norm() > 1e3 * exact.norm()
    assert (out_implicit - exact).norm() < 1e-3 * exact.norm()
    assert explicit.stats.newton_iters == 3 * steps  # the fine solver's only
    # Newton on a linear problem: one linear solve per implicit step, then the residual is
    # at rounding level (below newton_tol=1e-12; the default tolerance, 10 epsilons, sits
    # close to this stiff problem's rounding floor and may take a second iteration).
    # Coarse steps: the sweep (n) + iterations 1..3 (n - k each); fine steps: `steps` per
    # iteration in one batched solve of n - k + 1 slices.
    coarse_steps = n + sum(n - k for k in range(1, 4))
    fine_batches = [n - k + 1 for k in range(1, 4)]
    stats = implicit.stats
    assert stats.newton_iters == coarse_steps + 3 * steps
    assert stats.linear_solves == batch * (coarse_steps + steps * sum(fine_batches))
    # per step: residual, Jacobian, residual (+ f at the start for the trapezoid)
    assert stats.nfe_coarse == 3 * coarse_steps
    assert stats.nfe_fine == 3 * (1 + 3 * steps)


@pytest.mark.parametrize("kind", ["per_slice", "time_per_sample", "torchdiffeq"])
def test_fine_solves_of_an_iteration_are_one_batched_call_per_stage(kind):
    n, steps, batch, iters = 6, 3, 2, 3
    per_slice = kind == "per_slice"
    fields = [_Counted(_mlp(), kind == "time_per_sample") for _ in range(n if per_slice else 1)]
    block = PararealODEBlock(
        fields if per_slice else fields[0], 0.0, 1.0, num_slices=n, coarse="euler", fine="rk4",
        fine_steps=steps, max_iters=iters, tol=0.0,
    )
    with torch.no_grad():
        block(torch.randn(batch, 3, dtype=F64))
    seen = [shape for f in fields for shape in f.shapes]
    coarse_calls = n + sum(n - k for k in range(1, iters + 1))
    fine_calls = iters * 4 * steps  # rk4: 4 stages per step, one call per stage
    assert len(seen) == coarse_calls + fine_calls
    assert block.stats.nfe_coarse == coarse_calls and block.stats.nfe_fine == fine_calls
    # the fine calls of iteration k see slices k-1..n-1 at once (per-slice: inside vmap)
    slices_per_fine_call = sorted({n - k + 1 for k in range(1, iters + 1)})
    if per_slice:  # vmap runs every slice's fine stage through module 0's call
        assert all(shape == (batch, 3) for shape in seen)
        assert len(fields[0].shapes) == 1 + fine_calls
        for i, f in enumerate(fields[1:], start=1):
            assert len(f.shapes) == 1 + min(i, iters)  # the sweep, then iterations k <= i
    elif kind == "time_per_sample":  # one call on the stacked slices, one time per sample
        sizes = sorted({shape[0] for shape in seen} - {batch})
        assert sizes == [batch * s for s in slices_per_fine_call]
        assert {t for t in fields[0].time_shapes if t} == {(size,) for size in sizes}
    else:  # a torchdiffeq field sees what odeint gives it: one batch and a 0-d time
        assert set(seen) == {(batch, 3)} and set(fields[0].time_shapes) == {()}


def test_warm_start_from_the_converged_trajectory_takes_one_iteration():
    n, field, x0 = 6, _mlp(), torch.randn(3, 3, dtype=F64)
    block = PararealODEBlock(field, 0.0, 1.0, num_slices=n, tol=1e-10, return_trajectory=True)
    with torch.no_grad():
        converged = block(x0)
        cold_iters = block.stats.forward_iters
        again = block(x0, initial_guess=converged)
        assert block.stats.forward_iters <= 1 < cold_iters
        assert (again - converged).abs().max() <= 1e-12
        block.options = dataclasses.replace(block.options, warm_start=True)
        block(x0)  # stores its trajectory
        block(x0)
        assert block.stats.forward_iters <= 1
        block(torch.randn(5, 3, dtype=F64))  # other shape: cold start again
        assert block.stats.forward_iters == cold_iters


def test_tolerance_stops_early_with_error_near_tolerance():
    n, steps, field, x0 = 8, 4, _mlp(), torch.randn(3, 3, dtype=F64)
    with torch.no_grad():
        ref = _serial_rk4([field] * n, x0, 0.0, 1.0, steps)[-1]
        block = PararealODEBlock(field, 0.0, 1.0, num_slices=n, fine_steps=steps, tol=1e-8)
        out = block(x0)
    stats = block.stats
    assert stats.forward_iters < n
    assert stats.forward_residuals[-1] < 1e-8 <= stats.forward_residuals[-2]
    assert (out - ref).norm() / ref.norm() < 1e-8


def test_adaptive_fine_solver_matches_torchdiffeq():
    n, field, x0 = 4, _mlp(), torch.randn(3, 3, dtype=F64)
    block = PararealODEBlock(
        field, 0.0, 1.0, num_slices=n, fine="dopri5", rtol=1e-10, atol=1e-12, tol=0.0
    )
    with torch.no_grad():
        out = block(x0)
        ref = odeint(field, x0, torch.tensor([0.0, 1.0], dtype=F64), rtol=1e-12, atol=1e-14)[-1]
    assert (out - ref).abs().max() < 1e-8  # global error of a local tolerance of 1e-10


def test_per_slice_conv_field_matches_serial_solve():
    n, steps = 3, 2
    fields = [ConvVectorField(4).double() for _ in range(n)]
    x0 = torch.randn(2, 4, 5, 5, dtype=F64)
    block = PararealODEBlock(fields, 0.0, 1.0, fine_steps=steps, tol=0.0)
    with torch.no_grad():
        out = block(x0)
        ref = _serial_rk4(fields, x0, 0.0, 1.0, steps)[-1]
    assert block.num_slices == n
    assert (out - ref).abs().max() <= 1e-12


def test_no_grad_inference_keeps_no_graph_and_max_iters_is_settable():
    field, x0 = _mlp(), torch.randn(2, 3, dtype=F64)
    block = PararealODEBlock(field, 0.0, 1.0, num_slices=4, tol=0.0)
    assert block(x0).grad_fn is not None
    block.options = dataclasses.replace(block.options, max_iters=2)
    with torch.no_grad():
        out = block(x0)
    assert out.grad_fn is None and block.stats.forward_iters == 2


def test_float32_runs_and_agrees_with_float64():
    field64 = _mlp()
    field32 = MLPVectorField(3, hidden=16, layers=2)
    field32.load_state_dict({k: v.float() for k, v in field64.state_dict().items()})
    x0 = torch.randn(4, 3, dtype=F64)
    outs = []
    for field, x in [(field64, x0), (field32, x0.float())]:
        block = PararealODEBlock(
            field, 0.0, 1.0, num_slices=4, coarse="backward_euler", fine="trapezoid",
            fine_steps=4, tol=1e-5,
        )
        x = x.clone().requires_grad_()
        out = block(x)
        out.square().sum().backward()
        assert out.dtype == x.dtype == x.grad.dtype
        outs.append((out.double(), x.grad.double()))
    (out64, grad64), (out32, grad32) = outs
    assert (out32 - out64).abs().max() < 1e-5
    assert (grad32 - grad64).abs().max() < 1e-4 * (1 + grad64.abs().max())
