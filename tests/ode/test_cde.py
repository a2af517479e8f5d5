"""NeuralCDEBlock against torchcde.cdeint: K = N reproduces it, forward and every gradient;
the coarse propagators' log-signatures against independent computations; input errors."""

from __future__ import annotations

import pytest
import torch
import torchcde
from cde_helpers import F64, CDEFunc, cdeint_final, coefficients, series

from pnode_zoo.ode import BACKWARD_MODES, NeuralCDEBlock
from pnode_zoo.ode.cde import _bracket_term
from pnode_zoo.ode.cde_paths import chunk_log_signature, derivative, path_segments

BATCH, LENGTH, CHANNELS, HIDDEN = 3, 25, 3, 4


def relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@pytest.fixture
def problem():
    func = CDEFunc(HIDDEN, CHANNELS).to(F64)
    x = series(BATCH, LENGTH, CHANNELS)
    z0 = torch.randn(BATCH, HIDDEN, dtype=F64)
    return func, x, z0


@pytest.mark.parametrize("interpolation", ["cubic", "linear"])
@pytest.mark.parametrize("coarse", ["log_ode", "increment"])
@pytest.mark.parametrize("num_slices", [4, 6])
def test_k_equals_n_reproduces_cdeint(problem, interpolation, coarse, num_slices):
    func, x, z0 = problem
    coeffs = coefficients(x, interpolation)
    reference = cdeint_final(func, coeffs, z0, interpolation)
    block = NeuralCDEBlock(func, LENGTH, num_slices, interpolation=interpolation,
                           coarse_field=coarse, tol=0.0)
    with torch.no_grad():
        out = block(coeffs, z0)
    assert block.stats.forward_iters == num_slices
    assert relative(out, reference) <= 1e-10


@pytest.mark.parametrize("interpolation", ["cubic", "linear"])
def test_steps_per_observation_reproduce_cdeint_with_a_finer_step(problem, interpolation):
    func, x, z0 = problem
    coeffs = coefficients(x, interpolation)
    path = (torchcde.LinearInterpolation if interpolation == "linear"
            else torchcde.CubicSpline)(coeffs)
    reference = torchcde.cdeint(X=path, func=func, z0=z0, t=path.interval, method="rk4",
                                options={"step_size": 1 / 3}, adjoint=False)[:, -1]
    block = NeuralCDEBlock(func, LENGTH, 4, interpolation=interpolation, tol=0.0,
                           steps_per_observation=3)
    with torch.no_grad():
        out = block(coeffs, z0)
    assert block.options.fine_steps == 18
    assert relative(out, reference) <= 1e-10


def test_a_tolerance_stops_early_within_it(problem):
    func, x, z0 = problem
    coeffs = coefficients(x, "cubic")
    reference = cdeint_final(func, coeffs, z0)
    block = NeuralCDEBlock(func, LENGTH, 8, tol=1e-6)
    with torch.no_grad():
        out = block(coeffs, z0)
    assert block.stats.converged and block.stats.forward_iters < 8
    assert relative(out, reference) <= 1e-5


@pytest.mark.parametrize(("backward", "recompute"),
                         [*((mode, True) for mode in BACKWARD_MODES), ("unrolled", False)])
def test_gradients_equal_cdeints(problem, backward, recompute):
    func, x, z0 = problem
    coeffs = coefficients(x, "cubic")
    weights = torch.randn(BATCH, HIDDEN, dtype=F64)

    def grads(solve):
        func.zero_grad()
        start = z0.clone().requires_grad_()
        (solve(start) * weights).sum().backward()
        return [start.grad] + [p.grad.clone() for p in func.parameters()]

    reference = grads(lambda start: cdeint_final(func, coeffs, start))
    block = NeuralCDEBlock(func, LENGTH, 4, tol=0.0, backward=backward, recompute=recompute)
    for got, want in zip(grads(lambda start: block(coeffs, start)), reference, strict=True):
        assert relative(got, want) <= 1e-9


def test_path_derivative_is_torchcdes_per_row(problem):
    _, x, _ = problem
    for interpolation in ("cubic", "linear"):
        coeffs = coefficients(x, interpolation)
        path = (torchcde.LinearInterpolation if interpolation == "linear"
                else torchcde.CubicSpline)(coeffs)
        table = path_segments(coeffs, interpolation, LENGTH)
        # two slices stacked: rows 0..B-1 at time t[0], rows B..2B-1 at time t[1]
        for times in ([0.0, 3.5], [7.0, 23.999], [1 / 3, 24.0]):
            t = torch.tensor(times, dtype=F64).repeat_interleave(BATCH)
            got = derivative(table, t).view(2, BATCH, CHANNELS)
            for i, time in enumerate(times):
                want = path.derivative(torch.tensor(time, dtype=F64))
                torch.testing.assert_close(got[i], want, rtol=1e-12, atol=1e-12)


def _quadrature_area(path, a: float, b: float, points: int = 20001) -> torch.Tensor:
    """1/2 int (X - X_a) (x) dX - transpose, by the trapezoid rule on torchcde's own X."""
    t = torch.linspace(a, b, points, dtype=F64)
    values = torch.stack([path.evaluate(s) for s in t], dim=1) - path.evaluate(t[0])[:, None]
    slopes = torch.stack([path.derivative(s) for s in t], dim=1)
    integrand = values[..., :, None] * slopes[..., None, :]
    integral = torch.trapezoid(integrand, t, dim=1)
    return 0.5 * (integral - integral.transpose(-1, -2))


def test_log_signature_of_a_linear_path_in_closed_form(problem):
    _, x, _ = problem
    table = path_segments(coefficients(x, "linear"), "linear", LENGTH)
    increments, areas = chunk_log_signature(table, 4)
    for n in range(4):
        knots = x[:, 6 * n : 6 * n + 7]
        torch.testing.assert_close(increments[n], knots[:, -1] - knots[:, 0])
        # a polygon's Levy area: 1/2 sum_k (X_k - X_a) (x) dX_k - transpose
        offset, steps = knots[:, :-1] - knots[:, :1], knots.diff(dim=1)
        cross = torch.einsum("bki,bkj->bij", offset, steps)
        torch.testing.assert_close(areas[n], 0.5 * (cross - cross.transpose(-1, -2)))


def test_log_signature_of_a_cubic_path_by_quadrature(problem):
    _, x, _ = problem
    coeffs = coefficients(x[:1, :13], "cubic")
    path = torchcde.CubicSpline(coeffs)
    increments, areas = chunk_log_signature(path_segments(coeffs, "cubic", 13), 3)
    for n in range(3):
        a, b = 4.0 * n, 4.0 * (n + 1)
        torch.testing.assert_close(
            increments[n], path.evaluate(torch.tensor(b, dtype=F64))
            - path.evaluate(torch.tensor(a, dtype=F64)))
        torch.testing.assert_close(areas[n], _quadrature_area(path, a, b), rtol=1e-6, atol=1e-8)


def test_chens_identity_joins_chunks(problem):
    _, x, _ = problem
    table = path_segments(coefficients(x, "cubic"), "cubic", LENGTH)
    inc2, area2 = chunk_log_signature(table, 2)
    inc1, area1 = chunk_log_signature(table, 1)
    d1, d2 = inc2[0], inc2[1]
    joined = area2[0] + area2[1] + 0.5 * (torch.einsum("bi,bj->bij", d1, d2)
                                          - torch.einsum("bi,bj->bij", d2, d1))
    torch.testing.assert_close(inc1[0], d1 + d2)
    torch.testing.assert_close(area1[0], joined)


def _one_chunk_error(func, coarse: str, scale: float) -> float:
    """|G(z0) - F(z0)| over one chunk of a smooth loop scaled by ``scale``, G solved by rk4."""
    s = torch.linspace(0, 1, 9, dtype=F64)
    loop = torch.stack([torch.sin(2 * torch.pi * s), 1 - torch.cos(2 * torch.pi * s) + s], -1)
    x = scale * loop.expand(2, 9, 2)
    coeffs = coefficients(x, "cubic")
    z0 = torch.full((2, HIDDEN), 0.3, dtype=F64)
    block = NeuralCDEBlock(func, 9, 1, coarse_field=coarse, coarse="rk4", tol=0.0, max_iters=0)
    fine = NeuralCDEBlock(func, 9, 1, tol=0.0)
    with torch.no_grad():
        return (block(coeffs, z0) - fine(coeffs, z0)).norm().item()


def test_log_ode_step_is_one_order_higher_than_the_increment_step():
    # a chunk of a path scaled by r: the increment step misses the Levy area, O(r^2); the
    # depth-2 log-ODE step's error is O(r^3)
    func = CDEFunc(HIDDEN, 2).to(F64)
    for coarse, order in (("log_ode", 3), ("increment", 2)):
        errors = [_one_chunk_error(func, coarse, r) for r in (0.1, 0.05)]
        assert errors[0] / errors[1] == pytest.approx(2**order, rel=0.25), (coarse, errors)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"num_slices": 5}, "divides length - 1 = 24"),
     ({"coarse_field": "sampled"}, "coarse_field must be one of"),
     ({"interpolation": "spline"}, "interpolation must be one of"),
     ({"length": 1}, "length must be an integer >= 2"),
     ({"steps_per_observation": 0}, "steps_per_observation must be an integer >= 1")],
)
def test_construction_errors_name_the_fix(kwargs, message):
    args = {"func": CDEFunc(HIDDEN, CHANNELS), "length": LENGTH, "num_slices": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        NeuralCDEBlock(**args)


def test_call_errors_name_the_fix(problem):
    func, x, z0 = problem
    block = NeuralCDEBlock(func, LENGTH, 4)
    with pytest.raises(ValueError, match=r"shape \[batch, 24, 4 \* channels\]"):
        block(coefficients(x[:, :13], "cubic"), z0)
    with pytest.raises(ValueError, match="z0 must be"):
        block(coefficients(x, "cubic"), z0[:2])
    block.options = {"num_slices": 4, "fine_steps": 3}
    with pytest.raises(ValueError, match="fine_steps=6 "):
        block(coefficients(x, "cubic"), z0)


def test_state_dict_is_the_cde_functions():
    func = CDEFunc(HIDDEN, CHANNELS)
    block = NeuralCDEBlock(func, LENGTH, 4)
    assert set(block.state_dict()) == {f"func.{k}" for k in func.state_dict()}


class _LinearCDE(torch.nn.Module):
    """f_j(z) = M_j z: the Lie bracket [f_i, f_j](z) = (M_j M_i - M_i M_j) z in closed form."""

    def __init__(self, matrices: torch.Tensor) -> None:
        super().__init__()
        self.m = torch.nn.Parameter(matrices)  # [channels, hidden, hidden]

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return torch.einsum("jhk,bk->bhj", self.m, z)


def test_bracket_term_of_linear_fields_in_closed_form():
    m = torch.randn(CHANNELS, HIDDEN, HIDDEN, dtype=F64)
    func, z = _LinearCDE(m), torch.randn(5, HIDDEN, dtype=F64)
    upper = torch.randn(5, CHANNELS, CHANNELS, dtype=F64)
    areas = upper - upper.transpose(-1, -2)
    got = _bracket_term(func, torch.zeros(5, dtype=F64), z, func(None, z), areas)
    want = torch.zeros_like(z)
    for i in range(CHANNELS):
        for j in range(i + 1, CHANNELS):
            bracket = m[j] @ m[i] - m[i] @ m[j]
            want += areas[:, i, j, None] * (z @ bracket.T)
    torch.testing.assert_close(got, want)
