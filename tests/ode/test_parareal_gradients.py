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


class _OdeDemoField(nn.Module):
    """The form of torchdiffeq's examples/ode_demo.py field, f(t, y) = (y ** 3) A, A trainable
    (a tenth of the demo's, for random starts and guesses of size 1 under one Euler step)."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([[-0.01, 0.2], [-0.2, -0.01]], dtype=F64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (y**3) @ self.a


def _ode_demo() -> nn.Module:
    return _OdeDemoField()


def _gradcheck(block: PararealODEBlock, x0: torch.Tensor, fast_mode: bool = True) -> None:
    params = tuple(block.parameters())

    def run(x, *_):  # parameters are perturbed in place by gradcheck
        return block(x)

    inputs = (x0.requires_grad_(), *params)
    assert torch.autograd.gradcheck(run, inputs, atol=1e-7, rtol=1e-5, fast_mode=fast_mode)


@pytest.mark.parametrize("per_slice", [False, True])
@pytest.mark.parametrize(
    ("backward", "max_iters"),
    [("unrolled", 0), ("unrolled", 1), ("unrolled", 2), ("fine_adjoint", None),
     ("parareal_adjoint", None)],
)
@pytest.mark.parametrize("trajectory", [False, True])
def test_gradcheck(per_slice, backward, max_iters, trajectory):
    n = 3
    func = [_mlp() for _ in range(n)] if per_slice else _mlp()
    block = PararealODEBlock(
        func, 0.0, 1.0, num_slices=n, fine_steps=2, tol=0.0, backward=backward,
        max_iters=max_iters, return_trajectory=trajectory,
    )
    # the full Jacobian once per mode; random projections (fast mode) for the others
    full = not per_slice and not trajectory and max_iters in (None, 1)
    _gradcheck(block, torch.randn(2, 2, dtype=F64), fast_mode=not full)


def test_gradcheck_implicit_propagators():
    block = PararealODEBlock(
        _mlp(), 0.0, 1.0, num_slices=3, coarse="backward_euler", fine="trapezoid",
        fine_steps=2, tol=0.0, return_trajectory=True,
    )
    _gradcheck(block, torch.randn(2, 2, dtype=F64))


@pytest.mark.parametrize("options", [
    {"backward": "unrolled"}, {"backward": "fine_adjoint"}, {"backward": "parareal_adjoint"},
    # the chain run for 2 parts of the batch (2 and 3 samples), and for each sample alone
    {"backward": "fine_adjoint", "backward_micro_batches": 2},
    {"backward": "fine_adjoint", "backward_micro_batches": 9},
], ids=["unrolled", "fine_adjoint", "parareal_adjoint", "fine_adjoint_2_parts",
        "fine_adjoint_per_sample"])
@pytest.mark.parametrize("trajectory", [False, True])
def test_output_and_gradients_match_torchdiffeq(options, trajectory):
    # 6 steps: a step-wise pull-back rebuilds them in two sets (REBUILT_STEPS = 4), 2 to 6, 0 to 2
    n, steps, t0, t1 = 4, 6, 0.5, 2.0
    field = MLPVectorField(3, hidden=16, layers=2).double()
    x0 = torch.randn(5, 3, dtype=F64)
    weights = torch.randn(n + 1, 5, 3, dtype=F64)  # a loss that sees every boundary
    params = list(field.parameters())

    def loss(states):
        return (weights * states).sum() if trajectory else (weights[-1] * states).sum()

    x = x0.clone().requires_grad_()
    block = PararealODEBlock(
        field, t0, t1, num_slices=n, fine_steps=steps, tol=0.0, return_trajectory=trajectory,
        **options,
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
        block = PararealODEBlock(field, 0.0, 2.0, num_slices=n, tol=0.0, backward_tol=0.0, **kwargs)
        x = x0.clone().requires_grad_()
        block(x).square().sum().backward()
        return torch.cat([x.grad.flatten(), *(p.grad.flatten() for p in field.parameters())])

    field.zero_grad()
    exact = gradient(backward="fine_adjoint")
    errors = []
    for k in range(n + 1):
        field.zero_grad()
        approx = gradient(backward="parareal_adjoint", backward_max_iters=k)
        errors.append(((approx - exact).norm() / exact.norm()).item())
    # k = 0 (coarse adjoint only) is off by percents; every iteration gains at least 10x
    # until rounding; k = N is the exact adjoint.
    assert errors[0] > 1e-3
    for k in range(n - 1):
        assert errors[k + 1] < 0.1 * errors[k] or errors[k + 1] < 1e-14, errors
    assert errors[n] < 1e-14, errors


def _textbook_parareal(fields, x0, times, k_max, fine_steps, guess=None):
    """Parareal as written in the papers, every term computed (no converged prefix skipped),
    with torchdiffeq's solvers as G (one Euler step) and F (rk4), differentiated by autograd."""

    def solve(method, steps, n, x):
        grid = torch.linspace(float(times[n]), float(times[n + 1]), steps + 1, dtype=F64)
        return odeint(fields[n], x, grid, method=method)[-1]

    def coarse(n, x):
        return solve("euler", 1, n, x)

    n_slices = len(times) - 1
    states = [x0]
    for n in range(n_slices):
        states.append(coarse(n, states[n]) if guess is None else guess[n + 1])
    for _ in range(k_max):
        new = [x0]
        for n in range(n_slices):
            fine = solve("rk4", fine_steps, n, states[n])
            new.append(coarse(n, new[n]) + fine - coarse(n, states[n]))
        states = new
    return torch.stack(states)


@pytest.mark.parametrize("per_slice", [False, True])
@pytest.mark.parametrize("trajectory", [False, True])
@pytest.mark.parametrize("guessed", [False, True])
@pytest.mark.parametrize("recompute", [True, False])
# ode_demo's field saves its input y for its backward: kept graphs must not see it overwritten
@pytest.mark.parametrize("make_field", [_mlp, _ode_demo], ids=["mlp", "ode_demo"])
def test_unrolled_gradient_is_autograd_through_the_iterations(
    per_slice, trajectory, guessed, recompute, make_field
):
    n, steps, t0, t1 = 4, 6, 0.2, 1.7  # two sets of rebuilt steps, as above
    fields = [make_field() for _ in range(n)] if per_slice else [make_field()] * n
    params = [p for f in (fields if per_slice else fields[:1]) for p in f.parameters()]
    x0 = torch.randn(5, 2, dtype=F64)
    weights = torch.randn(n + 1, 5, 2, dtype=F64)
    guess = torch.randn(n + 1, 5, 2, dtype=F64) if guessed else None
    times = torch.linspace(t0, t1, n + 1, dtype=F64)

    def loss(states):
        return (weights * states).sum() if trajectory else (weights[-1] * states[-1]).sum()

    for k in range(n + 1):
        block = PararealODEBlock(
            fields if per_slice else fields[0], t0, t1, num_slices=n, fine_steps=steps,
            max_iters=k, tol=0.0, backward="unrolled", recompute=recompute,
            return_trajectory=True,
        )
        x = x0.clone().requires_grad_()
        out = block(x, initial_guess=guess)
        grads = torch.autograd.grad(loss(out if trajectory else out[-1:]), [x, *params])
        x_ref = x0.clone().requires_grad_()
        ref = _textbook_parareal(fields, x_ref, times, k, steps, guess)
        grads_ref = torch.autograd.grad(loss(ref if trajectory else ref[-1:]), [x_ref, *params],
                                        allow_unused=True)  # k = 0 from a guess: constant
        assert block.stats.forward_iters == block.stats.backward_iters == k
        assert (out - ref).abs().max() <= 1e-12 * (1 + ref.abs().max())
        for g, g_ref in zip(grads, grads_ref, strict=True):
            g_ref = torch.zeros_like(g) if g_ref is None else g_ref
            assert (g - g_ref).abs().max() <= 1e-12 * (1 + g_ref.abs().max()), k


def test_fine_adjoint_is_the_fine_gradient_only_as_the_forward_converges():
    # At K < N the fine adjoint is neither the gradient of the output (unrolled) nor of the
    # fine solve; its error against the fine NODE's gradient falls with K and is 0 at K = N.
    n = 6
    field, x0 = MLPVectorField(3, hidden=16, layers=2).double(), torch.randn(4, 3, dtype=F64)

    def gradient(backward: str, k: int) -> torch.Tensor:
        block = PararealODEBlock(field, 0.0, 3.0, num_slices=n, fine_steps=4, max_iters=k,
                                 tol=0.0, backward=backward)
        x = x0.clone().requires_grad_()
        grads = torch.autograd.grad(block(x).square().sum(), [x, *field.parameters()])
        return torch.cat([g.flatten() for g in grads])

    fine = gradient("unrolled", n)
    errors = []
    for k in range(n + 1):
        adjoint, unrolled = gradient("fine_adjoint", k), gradient("unrolled", k)
        errors.append(((adjoint - fine).norm() / fine.norm()).item())
        if k <= 2:  # not the gradient of what the forward computed either
            assert (adjoint - unrolled).norm() > 1e-6 * fine.norm()
    assert errors[0] > 1e-3 and errors[n] < 1e-14, errors
    assert all(later < earlier for earlier, later in zip(errors[:3], errors[1:4], strict=True))
