"""The method table against torchdiffeq: the methods it names and how it steps them; every
propagator method of ``METHODS``, as a propagator and as either propagator of a parareal block,
against the exact solution of a linear ODE and against torchdiffeq's own solve.

The problem is dx/dt = A x + exp(mu t) v (A a damped rotation), whose solution from x(s) is
x(s + h) = e^{Ah} (x(s) - e^{mu s} w) + e^{mu (s + h)} w with (mu I - A) w = v: the forcing
makes the slices' start times matter. Fixed-step methods must reproduce torchdiffeq's solve
on the same grid and converge at their order; implicit ones (not in torchdiffeq) converge at
theirs; adaptive ones meet their tolerance, like torchdiffeq's solve with the same tolerances,
and get less accurate when it is loosened.
"""

from __future__ import annotations

import math
import re
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torchdiffeq import odeint

from pnode_zoo.ode.methods import METHODS, method_names
from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.propagators import Propagator, Work

F64 = torch.float64
A = torch.tensor([[-0.5, 2.0], [-2.0, -0.5]], dtype=F64)
MU, V = 0.7, torch.tensor([1.0, -0.5], dtype=F64)
W = torch.linalg.solve(MU * torch.eye(2, dtype=F64) - A, V)
STARTS = torch.tensor([0.0, 0.4, 1.1], dtype=F64)  # three slices solved at once
SPANS = torch.tensor([0.4, 0.7, 0.5], dtype=F64)
SOLVERS = {name: METHODS[name] for name in method_names(propagator=True)}
FIXED = sorted(m for m, info in SOLVERS.items() if info.kind != "adaptive")
ADAPTIVE = sorted(m for m, info in SOLVERS.items() if info.kind == "adaptive")


class Forced(nn.Module):
    """f(t, x) = A x + exp(mu t) v; ``t`` is 0-d, or one time per slice of stacked samples."""

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype)
        t = t.repeat_interleave(len(x) // t.numel()) if t.dim() else t.expand(len(x))
        return x @ A.T + torch.exp(MU * t)[:, None] * V


def exact(x: torch.Tensor, start: torch.Tensor, span: torch.Tensor) -> torch.Tensor:
    """x(start + span) from x(start) (rows of ``x``, one start and span per row)."""
    decay = torch.linalg.matrix_exp(A * span[:, None, None])
    free = x - torch.exp(MU * start)[:, None] * W
    return (decay @ free[:, :, None])[:, :, 0] + torch.exp(MU * (start + span))[:, None] * W


def test_the_table_names_every_method_of_torchdiffeq():
    """torchdiffeq's own table is private; its public ``odeint`` names it in the error for an
    unknown method, so a method it adds or drops shows up here."""
    with pytest.raises(ValueError) as error:
        odeint(Forced(), torch.ones(1, 2, dtype=F64), torch.tensor([0.0, 1.0], dtype=F64),
               method="no_such_method")
    listed = re.search(r"Must be one of \{(.*)\}", str(error.value))
    assert listed, f"torchdiffeq's message for an unknown method changed: {error.value}"
    assert sorted(re.findall(r'"(\w+)"', listed.group(1))) == method_names()


@pytest.mark.parametrize("method", method_names())
def test_fixed_grid_and_adaptive_as_torchdiffeq_steps_the_method(method):
    """A fixed-grid method's solve follows the grid it is given, an adaptive one ignores it
    and follows its rtol; an explicit fixed-step one ignores rtol (torchdiffeq's implicit
    Adams methods use it for their corrector)."""
    x0, times = torch.tensor([[1.0, 0.5]], dtype=F64), torch.tensor([0.0, 1.0], dtype=F64)

    def solve(steps: int, rtol: float) -> torch.Tensor:
        def grid(func: object, y0: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return torch.linspace(0.0, 1.0, steps + 1, dtype=F64)
        with warnings.catch_warnings():  # adaptive methods warn of the unused grid
            warnings.simplefilter("ignore")
            return odeint(Forced(), x0, times, method=method, rtol=rtol, atol=rtol / 100,
                          options={"grid_constructor": grid})[-1]

    info = METHODS[method]
    follows_grid = not torch.equal(solve(8, 1e-3), solve(16, 1e-3))
    follows_rtol = not torch.equal(solve(8, 1e-3), solve(8, 1e-7))
    assert (follows_grid, info.adaptive) == (info.fixed_grid, not info.fixed_grid)
    if info.kind in ("fixed", "adaptive"):
        assert follows_rtol == info.adaptive


def test_the_method_table_is_what_the_docs_list():
    page = (Path(__file__).parents[2] / "docs" / "TIME_PARALLEL.md").read_text()
    listed = page[page.index("Methods by name:"):page.index("K = N reproduces")]
    assert sorted(set(re.findall(r"`(\w+)`", listed)) - {"rtol", "atol"}) == sorted(SOLVERS)


def _propagate(method: str, x: torch.Tensor, steps: int = 1, rtol: float = 1e-7,
               atol: float = 1e-9) -> torch.Tensor:
    batch = len(x) // len(STARTS)  # every slice's samples, stacked slice after slice
    return Propagator(method, steps, rtol=rtol, atol=atol)(
        Forced(), STARTS, SPANS, x, Work()).view(len(STARTS), batch, 2)


def _torchdiffeq(method: str, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """torchdiffeq's solve of each slice in the original time, slice after slice."""
    return torch.stack([
        odeint(Forced(), part, torch.stack([s, s + h]), method=method, **kwargs)[-1]
        for part, s, h in zip(x.view(len(STARTS), -1, 2), STARTS, SPANS, strict=True)])


def _exact(x: torch.Tensor) -> torch.Tensor:
    batch = len(x) // len(STARTS)
    rows = exact(x, STARTS.repeat_interleave(batch), SPANS.repeat_interleave(batch))
    return rows.view(len(STARTS), batch, 2)


def _order(error: callable, steps: int) -> float:
    """The observed order of convergence between ``steps`` and twice as many."""
    return math.log2(error(steps) / error(2 * steps))


@pytest.mark.parametrize("method", FIXED)
def test_a_fixed_step_or_implicit_propagator_converges_at_its_order(method):
    x = torch.randn(6, 2, dtype=F64)
    info = SOLVERS[method]
    def error(steps: int) -> float:
        return (_propagate(method, x, steps) - _exact(x)).abs().max().item()

    assert _order(error, 8) == pytest.approx(info.order, abs=0.25)
    if info.kind == "fixed":  # torchdiffeq on the same grid: the same arithmetic, rescaled
        for steps in (1, 5):
            ours = _propagate(method, x, steps)
            theirs = torch.stack([
                odeint(Forced(), part, torch.stack([s, s + h]), method=method,
                       options={"step_size": float(h) / steps})[-1]
                for part, s, h in zip(x.view(3, -1, 2), STARTS, SPANS, strict=True)])
            torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-13)


def _rtol(method: str) -> float:
    """A tight tolerance the method reaches in a few hundred steps (low orders need many)."""
    return 1e-6 if SOLVERS[method].order <= 3 else 1e-9


@pytest.mark.parametrize("method", ADAPTIVE)
def test_an_adaptive_propagator_meets_its_tolerance_like_torchdiffeq(method):
    x = torch.randn(6, 2, dtype=F64)
    rtol = _rtol(method)
    tight = {"rtol": rtol, "atol": rtol / 100}
    truth = _exact(x)
    ours = (_propagate(method, x, **tight) - truth).abs().max().item()
    theirs = (_torchdiffeq(method, x, **tight) - truth).abs().max().item()
    assert ours < 2000 * rtol and ours < 10 * theirs  # global error: the local one, summed
    loose = (_propagate(method, x, rtol=1e3 * rtol, atol=10 * rtol) - truth).abs().max()
    assert loose > 10 * ours  # the tolerances reach the solver


def _block(role: str, method: str, steps: int, **options) -> PararealODEBlock:
    other = {"fine": "coarse", "coarse": "fine"}[role]
    return PararealODEBlock(
        Forced(), 0.0, 1.5, num_slices=3, return_trajectory=True, rtol=_rtol(method),
        atol=_rtol(method) / 100,
        **{role: method, f"{role}_steps": steps, other: "euler"}, **options)


def _exact_trajectory(x0: torch.Tensor, slices: int = 3, t1: float = 1.5) -> torch.Tensor:
    states, h = [x0], t1 / slices
    for n in range(slices):
        batch = len(x0)
        start, span = torch.full((batch,), n * h, dtype=F64), torch.full((batch,), h, dtype=F64)
        states.append(exact(states[-1], start, span))
    return torch.stack(states)


@pytest.mark.parametrize("role", ["fine", "coarse"])
@pytest.mark.parametrize("method", sorted(SOLVERS))
def test_every_method_in_either_role_of_a_parareal_block(role, method):
    """As F with K = N iterations the block is the serial fine solve; as G with K = 0, the
    coarse sweep: either is the method's own solution of the whole interval."""
    x0 = torch.randn(4, 2, dtype=F64)
    iterations = {"max_iters": 3, "tol": 0.0} if role == "fine" else {"max_iters": 0}
    truth = _exact_trajectory(x0)
    def error(steps: int) -> float:
        with torch.no_grad():
            out = _block(role, method, steps, **iterations)(x0)
        return (out - truth).abs().max().item()

    if SOLVERS[method].kind == "adaptive":
        assert error(1) < 2000 * _rtol(method)
    else:
        assert _order(error, 8) == pytest.approx(SOLVERS[method].order, abs=0.25)
    if role == "fine" and SOLVERS[method].kind != "implicit":  # torchdiffeq, serially
        rtol = _rtol(method)
        kwargs = ({"rtol": rtol, "atol": rtol / 100} if SOLVERS[method].kind == "adaptive"
                  else {"options": {"step_size": 0.5 / 8}})
        times = torch.linspace(0.0, 1.5, 4, dtype=F64)
        theirs = odeint(Forced(), x0, times, method=method, **kwargs)
        with torch.no_grad():
            ours = _block(role, method, 8, **iterations)(x0)
        close = 4000 * rtol if SOLVERS[method].kind == "adaptive" else 1e-12
        torch.testing.assert_close(ours, theirs, rtol=close, atol=close)
