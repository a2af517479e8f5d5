"""Implicit theta-methods (backward Euler, trapezoid) whose stages are solved by Newton.

torchdiffeq has no Newton-based implicit solver (its ``implicit_adams`` corrects by fixed-point
iteration, which fails on exactly the stiff problems an implicit coarse solver is for), so the
theta-method is written here. One step of size h solves, for every sample,

    R(y) = y - c - h*theta*f(s + h, y) = 0,   c = x + h*(1 - theta)*f(s, x),

by Newton's method with the exact dense Jacobian I - h*theta*df/dy, built row by row from
vector-Jacobian products (one vmapped reverse-mode pass). Newton stops once the residual,
relative to the size of the equation's terms, is below the tolerance, or when it stalls at the
rounding floor just above it. The field must treat samples independently (its Jacobian is block
diagonal over the batch), which batching time slices requires anyway. Dense Jacobians cost
D^2 memory per sample for a state of D numbers: these methods are meant for small states.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch.func import vjp, vmap

if TYPE_CHECKING:
    from pnode_zoo.ode.propagators import Work

__all__ = ["Field", "theta_method"]

Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def theta_method(
    func: Field,
    x: torch.Tensor,
    span: float,
    steps: int,
    theta: float,
    *,
    tol: float,
    max_iters: int,
    work: Work,
) -> torch.Tensor:
    """Integrate dx/ds = func(s, x) from 0 to span with ``steps`` theta-method steps.

    Args:
        func: local vector field f(s, x), s a 0-d tensor.
        x: state at s = 0, batch first.
        span: length of the interval.
        steps: number of equal steps.
        theta: 1 for backward Euler, 1/2 for the trapezoid (Crank-Nicolson) rule.
        tol: Newton tolerance relative to the size of the step equation's terms.
        max_iters: Newton iterations allowed per step.
        work: a ``propagators.Work`` whose counters this call increments.
    """
    h = span / steps
    s = [torch.tensor(span * i / steps, dtype=x.dtype, device=x.device) for i in range(steps + 1)]
    f0 = func(s[0], x) if theta < 1 else None
    for i in range(steps):
        c = x if f0 is None else x + (h * (1 - theta)) * f0
        x, f0 = _newton(func, s[i + 1], c, x, h * theta, tol, max_iters, work)
        if f0 is None and theta < 1:
            f0 = func(s[i + 1], x)
    return x


def _newton(
    func: Field,
    s: torch.Tensor,
    c: torch.Tensor,
    guess: torch.Tensor,
    a: float,
    tol: float,
    max_iters: int,
    work: Work,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Solve y = c + a*f(s, y) per sample; return y and f(s, y) (None when differentiable)."""
    with torch.no_grad():
        y, c_value, previous = guess.detach(), c.detach(), float("inf")
        for iteration in range(max_iters + 1):
            fy = func(s, y)
            residual = y - c_value - a * fy
            scale = 1 + _sup(y) + _sup(c_value) + _sup(a * fy)
            error = (_sup(residual) / scale).max().item()
            if error <= tol or (error <= 100 * tol and error > previous / 4):
                break  # converged, or stalled at the rounding floor just above tol
            previous = error
            if not error < float("inf"):
                raise FloatingPointError("non-finite residual in the Newton iteration")
            if iteration == max_iters:
                raise RuntimeError(
                    f"Newton did not converge in newton_max_iters={max_iters} iterations "
                    f"(relative residual {error:.3e} > newton_tol={tol:.3e}); use more steps "
                    "per slice or raise newton_max_iters"
                )
            y = y - _newton_step(func, s, y, a, residual, work)
            work.newton_iters += 1
    if not torch.is_grad_enabled():
        return y, fy
    # Differentiable solution by the implicit function theorem: one Newton step from the
    # converged y, with y and the Jacobian held constant, has derivative -(dR/dy)^-1 dR/d(x, θ).
    residual = y - c - a * func(s, y)
    return y - _newton_step(func, s, y, a, residual, work), None


def _newton_step(
    func: Field, s: torch.Tensor, y: torch.Tensor, a: float, residual: torch.Tensor, work: Work
) -> torch.Tensor:
    """Solve (I - a*df/dy(s, y)) delta = residual per sample with the exact dense Jacobian."""
    batch, dim = y.shape[0], y[0].numel()
    with torch.no_grad():
        eye = torch.eye(dim, dtype=y.dtype, device=y.device)
        basis = eye.reshape(dim, 1, *y.shape[1:]).expand(dim, *y.shape)
        _, pullback = vjp(lambda z: func(s, z), y)
        (rows,) = vmap(pullback)(basis)  # rows[j] = e_j^T df/dy, for every sample at once
        matrix = eye - a * rows.reshape(dim, batch, dim).transpose(0, 1)
    work.linear_solves += batch
    delta = torch.linalg.solve(matrix, residual.reshape(batch, dim, 1))
    return delta.reshape(y.shape)


def _sup(tensor: torch.Tensor) -> torch.Tensor:
    """Max-norm per sample."""
    return tensor.detach().reshape(tensor.shape[0], -1).abs().amax(dim=1)
