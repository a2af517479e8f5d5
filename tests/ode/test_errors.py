"""Bad arguments and non-finite states fail early, naming the argument (or slice and iteration)."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.vector_fields import MLPVectorField

F64 = torch.float64


def _mlp() -> nn.Module:
    return MLPVectorField(2, hidden=4, layers=1).double()


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"num_slices": 0}, ValueError, "num_slices must be an integer >= 1"),
        ({"t0": 1.0, "t1": 1.0}, ValueError, "t0 < t1"),
        ({"t0": 2.0, "t1": 1.0}, ValueError, "t0 < t1"),
        ({"fine": "rk5"}, ValueError, "fine: unknown method 'rk5'.*backward_euler.*dopri5.*rk4"),
        ({"coarse": "Euler"}, ValueError, "coarse: unknown method 'Euler'"),
        ({"fine_steps": 0}, ValueError, "fine_steps must be an integer >= 1"),
        ({"max_iters": -1}, ValueError, "max_iters must be None or an integer >= 0"),
        ({"backward_max_iters": 1.5}, ValueError, "backward_max_iters must be None or an integer"),
        ({"tol": -1e-3}, ValueError, "tol must be a number >= 0"),
        ({"backward": "adjoint"}, ValueError,
         "backward must be one of unrolled, fine_adjoint, parareal_adjoint"),
        ({"backward": "serial"}, ValueError, "backward='serial' was renamed: use 'fine_adjoint'"),
        ({"max_iter": 2}, ValueError, "parareal has no option 'max_iter'; did you mean max_iters"),
        ({"recompute": False, "backward": "fine_adjoint"}, ValueError,
         "recompute=false needs backward='unrolled'"),
        ({"backward_micro_batches": 0, "backward": "fine_adjoint"}, ValueError,
         "backward_micro_batches must be an integer >= 1"),
        ({"backward_micro_batches": 2}, ValueError,
         "backward_micro_batches=2 needs backward='fine_adjoint'.*got 'unrolled'"),
        ({"rtol": 0.0}, ValueError, "rtol must be positive"),
        ({"newton_max_iters": 0}, ValueError, "newton_max_iters must be an integer >= 1"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    kwargs = {"num_slices": 2, **kwargs}
    with pytest.raises(error, match=match):
        PararealODEBlock(_mlp(), **kwargs)


def test_per_slice_sequence_of_wrong_length_or_architecture():
    match = "func: a per-slice sequence needs num_slices=3 modules, got 2"
    with pytest.raises(ValueError, match=match):
        PararealODEBlock([_mlp(), _mlp()], num_slices=3)
    mixed = [_mlp(), MLPVectorField(2, hidden=5, layers=1).double()]
    with pytest.raises(ValueError, match="func: the per-slice modules must share one architecture"):
        PararealODEBlock(mixed)


def test_options_are_checked_when_replaced():
    block = PararealODEBlock(_mlp(), num_slices=2)
    with pytest.raises(ValueError, match="max_iters must be None or an integer >= 0, got -2"):
        block.options = dataclasses.replace(block.options, max_iters=-2)
    with pytest.raises(ValueError, match="num_slices is fixed at construction"):
        block.options = {"num_slices": 3}
    block.options = {"max_iters": 1}  # a mapping: the defaults with that change
    assert block.options.max_iters == 1 and block.options.num_slices == 2


def test_bad_inputs():
    block = PararealODEBlock(_mlp(), num_slices=2)
    with pytest.raises(ValueError, match="x0 must be a floating-point tensor"):
        block(torch.zeros(3, 2, dtype=torch.long))
    with pytest.raises(FloatingPointError, match="x0 contains NaN or Inf"):
        block(torch.full((1, 2), float("nan"), dtype=F64))
    with pytest.raises(ValueError, match=r"initial_guess must have shape \(3, 1, 2\)"):
        block(torch.zeros(1, 2, dtype=F64), initial_guess=torch.zeros(2, 1, 2, dtype=F64))


class _Blowup(nn.Module):
    """Finite except where ``bad(t)``: there f is infinite."""

    def __init__(self, bad) -> None:
        super().__init__()
        self.bad = bad

    def forward(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=x.dtype).expand(x.shape[0])
        return torch.where(self.bad(t)[:, None], torch.inf, -x)


def test_non_finite_state_names_slice_and_iteration():
    # coarse Euler evaluates f at slice starts only: infinite from t = 0.5 (slice 2 of 4)
    block = PararealODEBlock(_Blowup(lambda t: t >= 0.5), 0.0, 1.0, num_slices=4)
    match = r"end of slice 2 \(t=0.75\) in forward parareal iteration 0"
    with pytest.raises(FloatingPointError, match=match):
        block(torch.ones(2, 2, dtype=F64))
    # rk4 also evaluates inside the slices: every fine solve fails in iteration 1
    off_grid = _Blowup(lambda t: (t * 4 - (t * 4).round()).abs() > 1e-9)
    inside = PararealODEBlock(off_grid, 0.0, 1.0, num_slices=4)
    with pytest.raises(FloatingPointError, match="end of slice 0 .* forward parareal iteration 1"):
        inside(torch.ones(2, 2, dtype=F64))


def test_non_finite_adjoint_names_slice_and_iteration():
    x = torch.ones(2, 2, dtype=F64, requires_grad=True)
    for backward, match in [
        ("parareal_adjoint", "adjoint at the start of slice 3 in backward parareal iteration 0"),
        ("fine_adjoint", "adjoint at the start of slice 3 in the fine adjoint"),
        ("unrolled", r"gradient at the end of slice 3 \(t=1\) in the unrolled backward"),
    ]:
        out = PararealODEBlock(_mlp(), 0.0, 1.0, num_slices=4, backward=backward)(x)
        with pytest.raises(FloatingPointError, match=match):
            out.backward(torch.full_like(out, float("nan")))


def test_newton_failure_is_an_error():
    block = PararealODEBlock(
        _mlp(), 0.0, 4.0, num_slices=2, coarse="backward_euler", newton_max_iters=1
    )
    with pytest.raises(RuntimeError, match="Newton did not converge in newton_max_iters=1"):
        block(torch.randn(3, 2, dtype=F64) * 3)
