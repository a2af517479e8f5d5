"""Neural controlled differential equations (Kidger et al. 2020) that classify series.

A neural CDE reads its input as it integrates: the series [batch, channels, length] becomes a
continuous path X(t) (torchcde's Hermite cubic with backward differences, or linear
interpolation, with knots at the observations t = 0, 1, ..., length - 1 and, by default, time
rising from 0 to 1 as an extra channel), the hidden state starts at z(0) = linear(X(0)) and
follows dz = f_θ(z) dX(t), and a linear head classifies z(length - 1). The fine grid takes one
step per observation (torchdiffeq's ``rk4``, the 3/8 rule), so the serial solve is as long as
the series. ``ncde`` solves it with ``torchcde.cdeint``.
"""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any, Literal

import torch
import torchcde
from torch import nn

from pnode_zoo.models.registry import register_model

Interpolation = Literal["hermite", "linear"]
INTERPOLATIONS = ("hermite", "linear")


class CDEField(nn.Module):
    """f_θ: hidden state [..., hidden] -> matrix [..., hidden, channels], an MLP whose last
    activation is tanh (bounded, as in Kidger et al. 2020: the state cannot run away over a
    long path). ``forward(t, z)`` has torchcde's signature; the field does not depend on t.

    Args:
        hidden: size of the hidden state z.
        channels: channels of the path X (the time channel included).
        width: width of the MLP's hidden layers.
        depth: hidden layers of the MLP (ReLU after each).
    """

    def __init__(self, hidden: int, channels: int, width: int = 64, depth: int = 1) -> None:
        super().__init__()
        if min(hidden, channels, width) < 1 or depth < 0:
            raise ValueError(
                f"hidden, width and channels must be at least 1 and depth at least 0, got "
                f"hidden={hidden}, width={width}, channels={channels}, depth={depth}"
            )
        self.hidden, self.channels = hidden, channels
        sizes = [hidden] + [width] * depth
        layers: list[nn.Module] = []
        for size_in, size_out in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(size_in, size_out), nn.ReLU()]
        layers += [nn.Linear(sizes[-1], hidden * channels), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.net(z).unflatten(-1, (self.hidden, self.channels))


def path_coefficients(x: torch.Tensor, time_channel: bool,
                      interpolation: Interpolation) -> torch.Tensor:
    """torchcde's coefficients of the path through a batch of series, knots at t = 0, ...,
    length - 1.

    Args:
        x: series [batch, channels, length].
        time_channel: prepend time as a channel, rising from 0 to 1 over the length (a CDE
            without it cannot tell how fast the series moved).
        interpolation: "hermite" (cubic Hermite with backward differences: causal, one
            observation of look-ahead at most) or "linear".
    """
    path = x.transpose(1, 2)
    if time_channel:
        batch, length = path.shape[:2]
        time = torch.linspace(0, 1, length, dtype=x.dtype, device=x.device)
        path = torch.cat([time.expand(batch, length)[..., None], path], dim=-1)
    if interpolation == "hermite":
        return torchcde.hermite_cubic_coefficients_with_backward_differences(path)
    return torchcde.linear_interpolation_coeffs(path)


def control_path(coeffs: torch.Tensor, interpolation: Interpolation) -> torchcde.InterpolationBase:
    """The torchcde path of ``path_coefficients``' output."""
    if interpolation == "hermite":
        return torchcde.CubicSpline(coeffs)
    return torchcde.LinearInterpolation(coeffs)


class CDEIntSolve(nn.Module):
    """z(end) of dz = f(z) dX by ``torchcde.cdeint``: torchdiffeq's ``rk4``, one step per
    observation. ``nfe`` counts f's evaluations in the last call (torchcde evaluates f once
    more than the solver, to check shapes; the adjoint's backward adds its own).

    Args:
        func: f_θ, ``func(t, z) -> [batch, hidden, channels]``.
        interpolation: "hermite" or "linear": how the coefficients were made.
        adjoint: backpropagate with torchcde's continuous adjoint instead of through the
            solver's steps.
    """

    def __init__(self, func: nn.Module, interpolation: Interpolation, adjoint: bool) -> None:
        super().__init__()
        self.func, self.interpolation, self.adjoint = func, interpolation, adjoint
        self.nfe = 0
        func.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: Any) -> None:
        self.nfe += 1

    def forward(self, coeffs: torch.Tensor, z0: torch.Tensor) -> torch.Tensor:
        path = control_path(coeffs, self.interpolation)
        self.nfe = 0
        z = torchcde.cdeint(path, self.func, z0, path.interval, adjoint=self.adjoint,
                            method="rk4", options={"step_size": 1.0})
        return z[:, -1]


class NeuralCDE(nn.Module):
    """Series -> path X -> z(0) = linear(X(0)) -> dz = f(z) dX (``block``) -> linear head on
    z(end).

    Args:
        block: solves the CDE: ``block(coeffs, z0) -> z(end)`` (``CDEIntSolve``, or the
            parareal ``NeuralCDEBlock``, which also takes ``index``), holding f as
            ``block.func``, a ``CDEField``.
        num_classes: number of output classes.
        channels: channels of the series (without the time channel).
        time_channel: time as an extra channel of the path.
        interpolation: "hermite" or "linear" (see ``path_coefficients``).
    """

    def __init__(self, block: nn.Module, num_classes: int, channels: int, time_channel: bool,
                 interpolation: Interpolation) -> None:
        super().__init__()
        field = block.func
        if field.channels != channels + int(time_channel):
            raise ValueError(f"the field reads {field.channels} channels, the path has "
                             f"{channels + int(time_channel)}")
        self.block = block
        self.time_channel, self.interpolation = time_channel, interpolation
        self.initial = nn.Linear(field.channels, field.hidden)
        self.head = nn.Linear(field.hidden, num_classes)
        self.takes_index = "index" in inspect.signature(block.forward).parameters

    @property
    def nfe(self) -> int:
        """Evaluations of f_θ in the last forward call."""
        return self.block.nfe

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, classes] of series [batch, channels, length]; ``index`` [batch] (each
        sample's key in its data set) keys a parareal block's warm start; others ignore it."""
        if x.dim() != 3 or x.shape[-1] < 2:
            raise ValueError(f"a neural CDE reads series [batch, channels, length >= 2], got "
                             f"shape {tuple(x.shape)}")
        coeffs = path_coefficients(x, self.time_channel, self.interpolation)
        path = control_path(coeffs, self.interpolation)
        z0 = self.initial(path.evaluate(path.interval[0]))
        if self.takes_index:
            return self.head(self.block(coeffs, z0, index=index))
        return self.head(self.block(coeffs, z0))


def check_interpolation(interpolation: str) -> None:
    """ValueError naming the choices unless ``interpolation`` is one of them."""
    if interpolation not in INTERPOLATIONS:
        raise ValueError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
        )


@register_model
def ncde(
    num_classes: int = 2,
    input_shape: Sequence[int] = (1, 150),
    hidden: int = 32,
    width: int = 64,
    depth: int = 1,
    time_channel: bool = True,
    interpolation: str = "hermite",
    adjoint: bool = False,
) -> NeuralCDE:
    """Neural CDE (Kidger et al. 2020) solved by ``torchcde.cdeint``: torchcde's Hermite cubic
    path (backward differences) or linear path through the observations, time as a channel,
    torchdiffeq's ``rk4`` (3/8 rule) with one step per observation, a linear head on the final
    hidden state.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, length) of the series.
        hidden: size of the hidden state z.
        width: width of the field's hidden layers.
        depth: hidden layers of the field's MLP.
        time_channel: time, rising from 0 to 1 over the series, as an extra channel.
        interpolation: "hermite" (cubic Hermite with backward differences) or "linear".
        adjoint: backpropagate with torchcde's continuous adjoint (torchcde's default)
            instead of through the solver's steps (the exact gradient; memory grows with the
            series' length).
    """
    check_interpolation(interpolation)
    channels = input_shape[0]
    field = CDEField(hidden, channels + int(time_channel), width, depth)
    block = CDEIntSolve(field, interpolation, adjoint)  # type: ignore[arg-type]
    return NeuralCDE(block, num_classes, channels, time_channel, interpolation)  # type: ignore[arg-type]
