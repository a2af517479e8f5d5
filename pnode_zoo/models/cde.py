"""Neural controlled differential equations (Kidger et al. 2020) that classify series.

A neural CDE reads its input as it integrates: the series [batch, channels, length] becomes a
continuous path X(t) (torchcde's Hermite cubic with backward differences, or linear
interpolation, with knots at the observations t = 0, 1, ..., length - 1 and, by default, time
rising from 0 to 1 as an extra channel), the hidden state starts at z(0) = linear(X(0)) and
follows dz = f_θ(z) dX(t), and a linear head classifies z(length - 1) (``readout: final``) or
z at the N + 1 boundaries of N equal chunks of the series, side by side (``readout:
boundaries``: the parareal twin's chunk boundaries, which it solves for anyway). The fine
grid takes one step per observation by default (torchdiffeq's ``rk4``, the 3/8 rule;
``steps_per_observation`` for more), so the serial solve is as long as the series. ``ncde``
solves it with ``torchcde.cdeint``; its twin ``ncde_parareal`` solves the same CDE by parareal
over chunks of the series (``NeuralCDEBlock``), with the same parameters (the plain model's
state_dict loads into the twin).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal

import torch
import torchcde
from torch import nn

from pnode_zoo.errors import UserInputError
from pnode_zoo.models.common import parareal_options, register_twins
from pnode_zoo.ode import NeuralCDEBlock, PararealOptions

__all__ = [
    "READOUTS",
    "CDEField",
    "CDEIntSolve",
    "INTERPOLATIONS",
    "Interpolation",
    "NeuralCDE",
    "check_interpolation",
    "control_path",
    "ncde",
    "ncde_parareal",
    "path_coefficients",
]

Interpolation = Literal["hermite", "linear"]
INTERPOLATIONS = ("hermite", "linear")
READOUTS = ("final", "boundaries")


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
            raise UserInputError(
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


def path_coefficients(x: torch.Tensor, time_channel: bool, interpolation: Interpolation,
                      input_scale: float = 1.0) -> torch.Tensor:
    """torchcde's coefficients of the path through a batch of series, knots at t = 0, ...,
    length - 1.

    Args:
        x: series [batch, channels, length].
        input_scale: factor on the series' values (not on time).
        time_channel: prepend time as a channel, rising from 0 to 1 over the length (a CDE
            without it cannot tell how fast the series moved).
        interpolation: "hermite" (cubic Hermite with backward differences: causal, one
            observation of look-ahead at most) or "linear".
    """
    path = x.transpose(1, 2) * input_scale
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
    """z(end) of dz = f(z) dX by ``torchcde.cdeint``: torchdiffeq's ``rk4``, ``steps`` steps per
    observation. ``nfe`` counts f's evaluations in the last call (torchcde evaluates f once
    more than the solver, to check shapes; the adjoint's backward adds its own).

    Args:
        func: f_θ, ``func(t, z) -> [batch, hidden, channels]``.
        interpolation: "hermite" or "linear": how the coefficients were made.
        adjoint: backpropagate with torchcde's continuous adjoint instead of through the
            solver's steps.
        steps: RK4 steps per observation (step size 1/steps).
    """

    def __init__(self, func: nn.Module, interpolation: Interpolation, adjoint: bool,
                 steps: int = 1) -> None:
        super().__init__()
        if not isinstance(steps, int) or steps < 1:
            raise UserInputError(f"steps_per_observation must be an integer >= 1, got {steps!r}")
        self.func, self.interpolation, self.adjoint = func, interpolation, adjoint
        self.steps = steps
        self.nfe = 0
        func.register_forward_pre_hook(self._count)

    def _count(self, module: nn.Module, args: Any) -> None:
        self.nfe += 1

    def forward(self, coeffs: torch.Tensor, z0: torch.Tensor, chunks: int = 0) -> torch.Tensor:
        """z(end) [batch, hidden], or with ``chunks`` N z at the boundaries of N equal chunks
        of the series, [N + 1, batch, hidden] (as the parareal block's ``boundaries``)."""
        path = control_path(coeffs, self.interpolation)
        self.nfe = 0
        times = torch.linspace(*path.interval.tolist(), chunks + 1) if chunks else path.interval
        z = torchcde.cdeint(path, self.func, z0, times.to(z0.dtype), adjoint=self.adjoint,
                            method="rk4", options={"step_size": 1.0 / self.steps})
        return z.transpose(0, 1) if chunks else z[:, -1]


class NeuralCDE(nn.Module):
    """Series -> path X -> z(0) = linear(X(0)) -> dz = f(z) dX (``block``) -> linear head on
    z(end), or on z at all chunk boundaries.

    Args:
        block: solves the CDE: ``block(coeffs, z0) -> z(end)`` (``CDEIntSolve``, or the
            parareal ``NeuralCDEBlock``, which also takes ``index``), holding f as
            ``block.func``, a ``CDEField``.
        num_classes: number of output classes.
        channels: channels of the series (without the time channel).
        time_channel: time as an extra channel of the path.
        interpolation: "hermite" or "linear" (see ``path_coefficients``).
        input_scale: factor on the series' values in the path.
        readout: "final" (the head reads z(end)) or "boundaries" (z at the boundaries of
            ``readout_chunks`` equal chunks, z(0) and z(end) included, concatenated).
        readout_chunks: N of the "boundaries" readout; a parareal block's own ``num_slices``
            where None (its boundaries are free), required by a plain block.
        head_norm: standardise the head's features over the batch (``BatchNorm1d``) first.
    """

    def __init__(self, block: nn.Module, num_classes: int, channels: int, time_channel: bool,
                 interpolation: Interpolation, input_scale: float = 1.0,
                 readout: str = "final", readout_chunks: int | None = None,
                 head_norm: bool = False) -> None:
        super().__init__()
        field = block.func
        if field.channels != channels + int(time_channel):
            raise UserInputError(f"the field reads {field.channels} channels, the path has "
                             f"{channels + int(time_channel)}")
        self.block = block
        if not (math.isfinite(input_scale) and input_scale > 0):
            raise UserInputError(f"input_scale must be a positive number, got {input_scale}")
        self.time_channel, self.interpolation = time_channel, interpolation
        self.input_scale = input_scale
        self.chunks = _readout_chunks(readout, readout_chunks, getattr(block, "num_slices", None))
        self.initial = nn.Linear(field.channels, field.hidden)
        features = field.hidden * (self.chunks + 1)
        linear = nn.Linear(features, num_classes)
        self.head = nn.Sequential(nn.BatchNorm1d(features), linear) if head_norm else linear
        self.takes_index = "index" in inspect.signature(block.forward).parameters

    @property
    def nfe(self) -> int:
        """Evaluations of f_θ in the last forward call."""
        return self.block.nfe

    def forward(self, x: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
        """Logits [batch, classes] of series [batch, channels, length]; ``index`` [batch] (each
        sample's key in its data set) keys a parareal block's warm start; others ignore it."""
        if x.dim() != 3 or x.shape[-1] < 2:
            raise UserInputError(f"a neural CDE reads series [batch, channels, length >= 2], got "
                             f"shape {tuple(x.shape)}")
        coeffs = path_coefficients(x, self.time_channel, self.interpolation, self.input_scale)
        path = control_path(coeffs, self.interpolation)
        z0 = self.initial(path.evaluate(path.interval[0]))
        if self.takes_index:
            z = self.block(coeffs, z0, index=index, boundaries=bool(self.chunks))
        else:
            z = self.block(coeffs, z0, self.chunks)
        return self.head(z.transpose(0, 1).flatten(1) if self.chunks else z)


def _readout_chunks(readout: str, chunks: int | None, slices: int | None) -> int:
    """N of the boundaries readout (0: the final state), checked against the block's slices."""
    if readout not in READOUTS:
        raise UserInputError(f"readout must be one of {', '.join(READOUTS)}, got {readout!r}")
    if readout == "final":
        return 0
    if chunks is None and slices is None:
        raise UserInputError("readout: boundaries needs readout_chunks (the parareal twin's "
                             "parareal.num_slices) on the plain neural CDE")
    if chunks is not None and slices is not None and chunks != slices:
        raise UserInputError(f"readout_chunks ({chunks}) must equal parareal.num_slices "
                             f"({slices}): the twin reads its own chunk boundaries")
    out = slices if chunks is None else chunks
    if not isinstance(out, int) or out < 1:
        raise UserInputError(f"readout_chunks must be an integer >= 1, got {out!r}")
    return out


def check_interpolation(interpolation: str) -> None:
    """ValueError naming the choices unless ``interpolation`` is one of them."""
    if interpolation not in INTERPOLATIONS:
        raise UserInputError(
            f"interpolation must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}"
        )


def _ncde(
    block: Callable[..., nn.Module],
    num_classes: int = 2,
    input_shape: Sequence[int] = (1, 129),
    hidden: int = 32,
    width: int = 64,
    depth: int = 1,
    time_channel: bool = True,
    interpolation: str = "hermite",
    input_scale: float = 1.0,
    steps_per_observation: int = 1,
    readout: str = "final",
    readout_chunks: int | None = None,
    head_norm: bool = False,
) -> NeuralCDE:
    """Neural CDE (Kidger et al. 2020): path through the series -> ``block`` -> linear head.

    Args:
        num_classes: number of output classes.
        input_shape: (channels, length) of the series; a parareal block's
            ``parareal.num_slices`` must divide length - 1 (pad the series, e.g. with the
            data's ``length``).
        hidden: size of the hidden state z.
        width: width of the field's hidden layers.
        depth: hidden layers of the field's MLP.
        time_channel: time, rising from 0 to 1 over the series, as an extra channel.
        interpolation: "hermite" (cubic Hermite with backward differences) or "linear".
        input_scale: factor on the series' values in the path (not on time): the flow's
            sensitivity to the series, which decides how fast parareal converges over a
            chunk (on ACSF1, K is about N at 1 and 3 to 6 at 0.1:
            docs/benchmarks/cde_coarse.md).
        steps_per_observation: RK4 steps per observation (cdeint's step size 1/s): a finer,
            costlier solve, closer to the exact CDE; the plain and parareal twins must use the
            same.
        readout: what the head reads: "final" (z at the end of the series) or "boundaries"
            (z at the N + 1 boundaries of N equal chunks, concatenated: the parareal twin's
            chunk boundaries, free on both twins as the solves pass through those times). The
            final state of a long series keeps little of its shape: with boundaries the
            untrained model's features already separate the classes better (issue 29).
        readout_chunks: N of the "boundaries" readout: required by ``ncde``, the twin's
            ``parareal.num_slices`` if given to ``ncde_parareal``.
        head_norm: standardise the head's features over the batch (``BatchNorm1d``) first.
            The states of different series differ little next to what they share (on ACSF1
            at input_scale 0.1, a batch spread of about 0.03 around 0.35), which leaves the
            plain head nearly blind to the class; standardised, it trains (issue 29).
    """
    check_interpolation(interpolation)
    field = CDEField(hidden, input_shape[0] + int(time_channel), width, depth)
    body = block(field, int(input_shape[1]), interpolation, steps_per_observation)
    return NeuralCDE(body, num_classes, input_shape[0], time_channel,
                     interpolation, input_scale, readout, readout_chunks,  # type: ignore[arg-type]
                     head_norm)


def _cdeint(field: CDEField, length: int, interpolation: Interpolation, steps: int, *,
            adjoint: bool = False) -> CDEIntSolve:
    """The plain twin's solve: ``torchcde.cdeint``.

    Args:
        field: f_θ.
        length: observations per series.
        interpolation: the path's interpolation.
        steps: RK4 steps per observation.
        adjoint: backpropagate with torchcde's continuous adjoint (torchcde's default)
            instead of through the solver's steps (the exact gradient; memory grows with the
            series' length).
    """
    return CDEIntSolve(field, interpolation, adjoint, steps)


def _cde_parareal(field: CDEField, length: int, interpolation: Interpolation, steps: int, *,
                  coarse_field: str = "increment", cache_mib: float = 64.0,
                  parareal: PararealOptions | Mapping[str, Any] | None = None,
                  ) -> NeuralCDEBlock:
    """The parareal twin's solve over chunks of the series (``NeuralCDEBlock``).

    Args:
        field: f_θ.
        length: observations per series.
        interpolation: the path's interpolation.
        steps: RK4 steps per observation.
        coarse_field: the coarse step's field over a chunk: "increment" (the chunk's increment
            alone) or "log_ode" (increment and Lévy area: a depth-2 log-ODE step).
        cache_mib: memory bound of the warm-start cache, MiB (per rank).
        parareal: the block's ``PararealOptions`` (a mapping of some of its fields) on top of
            the zoo's ``ZOO_PARAREAL`` (4 chunks, tol 1e-3, the exact ``unrolled`` gradient);
            ``warm_start: true`` starts from the boundaries each sample (keyed by the batch's
            index) had when last seen. ``fine``/``fine_steps`` are the block's own.
    """
    options = parareal_options(parareal)
    return NeuralCDEBlock(
        field, length, options.num_slices or 1,
        interpolation="cubic" if interpolation == "hermite" else "linear",
        coarse_field=coarse_field, steps_per_observation=steps,
        cache_bytes=int(cache_mib * 2**20), options=options,
    )


ncde, ncde_parareal = register_twins(
    _ncde,
    ncde=("Neural CDE (Kidger et al. 2020) solved by ``torchcde.cdeint``.\n\n"
          "torchcde's Hermite cubic path (backward differences) or linear path through the "
          "observations,\ntime as a channel, torchdiffeq's ``rk4`` (3/8 rule) with one step "
          "per observation (or\n``steps_per_observation``), a linear head on the final hidden "
          "state.", _cdeint),
    ncde_parareal=("``ncde`` solved by parareal over chunks of the series "
                   "(``NeuralCDEBlock``).\n\nThe fine propagator is ``ncde``'s rk4 steps, so "
                   "at K = N the twin is ``ncde`` (with the same\n``steps_per_observation``); "
                   "the coarse one takes one step per chunk (``parareal.coarse``,\n"
                   "``coarse_steps``). Same parameters as ``ncde``.", _cde_parareal),
)
