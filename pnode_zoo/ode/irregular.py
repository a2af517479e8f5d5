"""Irregularly spaced output times for a batch whose samples each have their own times.

torchdiffeq's ``odeint`` and the parareal block solve one time grid for the whole batch. A
forecaster of irregularly sampled series needs the state of sample b at its own times
t_b0 < t_b1 < ... < t_bH. Solving in the observation index s instead of the time t makes the
grid common: s = k at observation k of every sample, and a monotone time map t_b(s) carries
each sample's own times, so x_b(t_b(s)) solves dx/ds = t_b'(s) f(t_b(s), x).

The map is the monotone piecewise-cubic Hermite (PCHIP) interpolant of the knots (k, t_bk).
Its derivative is continuous, so a solver stage that lands on a knot (RK4's last stage does)
sees the same field from either interval, and with equal gaps it is the straight line: the
solve is then exactly the plain one in t, step for step. Each sample's gaps ride along as
constant extra state components, so the slices of a parareal block (stacked along the batch,
or spread over ranks) carry them without any side channel.
"""

from __future__ import annotations

import torch
from torch import nn

from pnode_zoo.ode.vector_fields import _time_per_sample

__all__ = ["IrregularTimeField", "knot_slopes"]


def knot_slopes(gaps: torch.Tensor) -> torch.Tensor:
    """dt/ds at the H + 1 knots of the monotone cubic through gaps [batch, H] (Fritsch-Butland:
    the harmonic mean of the two adjacent gaps inside, the end gap at either end).

    Args:
        gaps: positive time between consecutive knots, [batch, H].
    """
    inner = 2 * gaps[:, :-1] * gaps[:, 1:] / (gaps[:, :-1] + gaps[:, 1:])
    return torch.cat([gaps[:, :1], inner, gaps[:, -1:]], dim=1)


class IrregularTimeField(nn.Module):
    """f(t, x) in the observation index s, for states [x, gaps] with per-sample gaps.

    The state is [batch, dim + H]: the ODE state x, then the H positive gaps between the
    sample's H + 1 output times (the first at t = 0). Integrate over s in [0, H] with an output
    at every integer s: the x part at s = k is x(t_k). The gaps' derivative is zero.

    Args:
        func: the vector field f(t, x) of x [batch, dim] (``time_per_sample``).
        dim: size of x, the state part that ``func`` sees.
    """

    time_per_sample = True

    def __init__(self, func: nn.Module, dim: int) -> None:
        super().__init__()
        self.func, self.dim = func, dim

    def forward(self, s: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x, gaps = state[:, : self.dim], state[:, self.dim :]
        s = _time_per_sample(s, state)
        index = s.floor().clamp(0, gaps.shape[1] - 1)
        u = (s - index).unsqueeze(-1)  # position inside the interval, in [0, 1]
        index = index.long().unsqueeze(-1)
        slopes = knot_slopes(gaps)
        gap, slope0 = gaps.gather(1, index), slopes.gather(1, index)
        slope1 = slopes.gather(1, index + 1)
        start = (gaps.cumsum(1) - gaps).gather(1, index)
        # cubic Hermite basis on [0, 1]: value and derivative
        time = (start + gap * u**2 * (3 - 2 * u) + slope0 * u * (1 - u) ** 2
                - slope1 * u**2 * (1 - u))
        speed = 6 * gap * u * (1 - u) + slope0 * (1 - u) * (1 - 3 * u) + slope1 * u * (3 * u - 2)
        return torch.cat([speed * self.func(time.squeeze(-1), x), torch.zeros_like(gaps)], dim=-1)
