"""Fuzz (hypothesis) over the parareal solve's options, times and input shapes.

Every draw either raises ValueError, or returns what torchdiffeq's ``odeint`` returns on the
same fine grid (values and, through every gradient mode, gradients) once the iteration has
reached K = N, and a finite result of the right shape before that. A per-example deadline
turns a hang into a failure. Draws are derandomised, so CI sees the same examples each run.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn
from torchdiffeq import odeint

from pnode_zoo.ode import PararealODEBlock, odeint_parareal

FIXED_METHODS = ["euler", "midpoint", "heun3", "rk4"]
FUZZ = settings(max_examples=150, deadline=20_000, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])


class ElementwiseField(nn.Module):
    """f(t, y) = tanh(w y) cos(t) - d y, elementwise, so it takes any state shape; written for
    torchdiffeq (0-d t)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.tensor(0.8, dtype=torch.float64))
        self.d = nn.Parameter(torch.tensor(0.3, dtype=torch.float64))

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.w * y) * torch.cos(t) - self.d * y


@st.composite
def solves(draw: st.DrawFn) -> dict:
    """Valid arguments of ``odeint_parareal``: times, state shape and options."""
    intervals = draw(st.integers(1, 3))
    per_interval = draw(st.integers(1, 3))
    steps = [draw(st.floats(0.05, 1.0)) for _ in range(intervals)]
    start = draw(st.floats(-2.0, 2.0))
    times = [start + sum(steps[:i]) for i in range(intervals + 1)]
    tail = draw(st.sampled_from([(), (1,), (3,), (2, 2), (1, 3, 3)]))
    num_slices = intervals * per_interval
    options = {
        "num_slices": num_slices,
        "fine": draw(st.sampled_from(FIXED_METHODS)),
        "fine_steps": draw(st.integers(1, 3)),
        "coarse": draw(st.sampled_from(["euler", "midpoint", "rk4"])),
        "coarse_steps": draw(st.integers(1, 2)),
        "max_iters": draw(st.one_of(st.none(), st.integers(0, num_slices + 1))),
        "tol": draw(st.sampled_from([0.0, 1e-3, 1e-8])),
        "backward": draw(st.sampled_from(["unrolled", "fine_adjoint", "parareal_adjoint"])),
    }
    if options["backward"] == "unrolled":
        options["recompute"] = draw(st.booleans())
    return {"times": times, "shape": (draw(st.integers(1, 3)), *tail), "options": options,
            "seed": draw(st.integers(0, 2**16))}


def _serial_fine(field: nn.Module, y0: torch.Tensor, times: list[float], options: dict):
    """torchdiffeq on the fine grid the parareal solve converges to, at the output times."""
    per_interval = options["num_slices"] // (len(times) - 1)
    steps = per_interval * options["fine_steps"]
    grid = torch.cat([torch.linspace(a, b, steps + 1, dtype=torch.float64)[:-1]
                      for a, b in zip(times, times[1:], strict=False)]
                     + [torch.tensor([times[-1]], dtype=torch.float64)])
    path = odeint(field, y0, grid, method=options["fine"],
                  options={"grid_constructor": lambda f, y, t: t})
    return path[::steps]


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm().clamp_min(1e-300))


@FUZZ
@given(solves())
def test_a_valid_solve_matches_torchdiffeq_once_converged(case: dict) -> None:
    generator = torch.Generator().manual_seed(case["seed"])
    y0 = torch.randn(case["shape"], generator=generator, dtype=torch.float64)
    field = ElementwiseField()
    t = torch.tensor(case["times"], dtype=torch.float64)
    y0.requires_grad_(True)
    out, stats = odeint_parareal(field, y0, t, options=case["options"], return_stats=True)
    assert out.shape == (len(t), *y0.shape)
    assert torch.isfinite(out).all()
    weights = torch.randn(out.shape, generator=generator, dtype=torch.float64)
    parameters = [y0, *field.parameters()]
    gradients = torch.autograd.grad((out * weights).sum(), parameters)
    assert all(torch.isfinite(g).all() for g in gradients)
    if stats.forward_iters < case["options"]["num_slices"]:
        event("stopped before K = N")
        return  # stopped early by design (cap or tolerance): a different, cheaper map
    event("K = N")
    reference = _serial_fine(field, y0, case["times"], case["options"])
    assert _relative(out, reference) < 1e-11
    expected = torch.autograd.grad((reference * weights).sum(), parameters)
    exact_backward = (case["options"]["backward"] != "parareal_adjoint"
                      or stats.backward_iters >= case["options"]["num_slices"])
    event(f"gradient compared: {exact_backward}")
    if exact_backward:
        for got, want in zip(gradients, expected, strict=True):
            assert _relative(got, want) < 1e-9


@FUZZ
@given(solves())
def test_the_block_solves_what_odeint_parareal_solves(case: dict) -> None:
    times, options = (case["times"][0], case["times"][-1]), case["options"]
    y0 = torch.randn(case["shape"], generator=torch.Generator().manual_seed(case["seed"]),
                     dtype=torch.float64)
    field = ElementwiseField()
    block = PararealODEBlock(field, *times, options, return_trajectory=True)
    t = torch.linspace(*times, options["num_slices"] + 1, dtype=torch.float64)
    expected = odeint_parareal(field, y0, t, options=options)
    assert torch.allclose(block(y0), expected, rtol=1e-12, atol=1e-12)


MISTAKES = {
    "times not increasing": ({"times": [0.0, 0.5, 0.5]}, {}),
    "times decreasing": ({"times": [1.0, 0.0]}, {}),
    "times with NaN": ({"times": [0.0, math.nan]}, {}),
    "one time": ({"times": [0.0]}, {}),
    "slices not a multiple of the intervals": ({"times": [0.0, 0.5, 1.0]}, {"num_slices": 3}),
    "no slices": ({}, {"num_slices": 0}),
    "no fine steps": ({}, {"fine_steps": 0}),
    "fractional coarse steps": ({}, {"coarse_steps": 1.5}),
    "unknown method": ({}, {"fine": "rk5"}),
    "negative tolerance": ({}, {"tol": -1e-3}),
    "infinite tolerance": ({}, {"tol": math.inf}),
    "negative cap": ({}, {"max_iters": -1}),
    "unknown gradient mode": ({}, {"backward": "adjoint"}),
    "recompute off without unrolled": ({}, {"backward": "fine_adjoint", "recompute": False}),
    "unknown option": ({}, {"slices": 2}),
    "integer state": ({"dtype": torch.int64}, {}),
    "0-d state": ({"shape": ()}, {}),
}


@FUZZ
@given(st.sampled_from(sorted(MISTAKES)), solves())
def test_a_mistake_raises_value_error(mistake: str, case: dict) -> None:
    inputs, option_changes = MISTAKES[mistake]
    options = {**case["options"], **option_changes}
    if "times" in inputs:
        options["num_slices"] = option_changes.get("num_slices", 1)
    times = inputs.get("times", case["times"])
    y0 = torch.ones(inputs.get("shape", case["shape"]), dtype=inputs.get("dtype", torch.float64))
    with pytest.raises(ValueError):
        odeint_parareal(ElementwiseField(), y0, torch.tensor(times, dtype=torch.float64),
                        options=options)
