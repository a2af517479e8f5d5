"""Neural CDEs solved parallel in time: parareal over chunks of the series.

A neural controlled differential equation (Kidger et al. 2020) dz = f(z) dX(t) reads the series
X as it integrates, one solver step per observation, so its serial solve is as long as the
series. ``NeuralCDEBlock`` cuts the series into N chunks, the parareal slices: the fine
propagator is the step-per-observation RK4 (torchdiffeq's 3/8 rule, as ``torchcde.cdeint``
with ``method="rk4"``), and the coarse one takes one step over a whole chunk from the chunk's
log-signature (``"log_ode"``: dz = f(z) dX + [f, f](z) : A, Morrill et al. 2021) or its
increment alone (``"increment"``). A warm start begins the iteration from the coarse sweep
corrected by the jumps F - G each sample's chunks had when last seen (``WarmStartCache``);
``tol`` still decides convergence.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from pnode_zoo.errors import UserInputError
from pnode_zoo.ode.cde_cache import WarmStartCache
from pnode_zoo.ode.cde_paths import INTERPOLATIONS, chunk_log_signature, derivative, path_segments
from pnode_zoo.ode.options import PararealOptions
from pnode_zoo.ode.parareal_block import PararealODEBlock
from pnode_zoo.ode.propagators import Work
from pnode_zoo.ode.slices import SliceFields
from pnode_zoo.ode.vector_fields import _time_per_sample

__all__ = ["CDE_COARSE_FIELDS", "DEFAULT_CACHE_BYTES", "NeuralCDEBlock"]

#: Coarse propagators by name, with the log-signature depth each one reads.
CDE_COARSE_FIELDS = {"log_ode": 2, "increment": 1}
DEFAULT_CACHE_BYTES = 64 * 2**20


class _PathField(nn.Module):
    """dz/dt = f(t, z) dX/dt for one call's path; rows are slices' samples stacked."""

    time_per_sample = True

    def __init__(self, func: nn.Module, table: torch.Tensor) -> None:
        super().__init__()
        self.func, self.table = func, table

    def forward(self, t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t = _time_per_sample(t, z)
        slope = derivative(self.table, t)
        # the product exactly as torchcde's _VectorField writes it
        return (self.func(t, z) @ slope.unsqueeze(-1)).squeeze(-1)


class _ChunkFields:
    """The coarse propagator's fields: on chunk n, constant in time, the log-ODE field
    (f(z) dX_n + sum_ij (df_j f_i)(z) A_n^ij) / span, so one step over the chunk applies the
    chunk's log-signature. Knows its slices (``SliceFields.field``'s contract), so a stage time
    on a chunk boundary is never read as the neighbour's chunk."""

    def __init__(self, func: nn.Module, increments: torch.Tensor,
                 areas: torch.Tensor | None, span: float) -> None:
        self.func, self.span = func, span
        self.increments, self.areas = increments, areas

    def field(self, slices: range, batch_size: int, selected: Any = None):
        cut = slice(slices.start, slices.stop)
        increments = self.increments[cut].reshape(-1, self.increments.shape[-1])
        areas = None if self.areas is None else self.areas[cut].flatten(0, 1)

        def field(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(-1)
            t = t.repeat_interleave(z.shape[0] // t.shape[0])  # one time per slice -> per row
            value = self.func(t, z)
            out = (value @ increments.unsqueeze(-1)).squeeze(-1)
            if areas is not None:
                out = out + _bracket_term(self.func, t, z, value, areas)
            return out / self.span

        return field


def _bracket_term(func: nn.Module, t: torch.Tensor, z: torch.Tensor, value: torch.Tensor,
                  areas: torch.Tensor) -> torch.Tensor:
    """sum_ij (df_j(z) f_i(z)) A^ij = sum_{i<j} [f_i, f_j](z) A^ij for antisymmetric A: the
    directional derivative of column j of f along w_j = sum_i f_i A^ij, one forward-mode JVP
    for all C columns (rows repeated C times)."""
    rows, channels = z.shape[0], value.shape[-1]
    tangents = torch.einsum("rhi,rij->jrh", value, areas)  # w_j per row
    _, pushed = torch.func.jvp(lambda y: func(t.repeat(channels), y),
                               (z.repeat(channels, 1),), (tangents.reshape(-1, z.shape[1]),))
    pushed = pushed.view(channels, rows, *pushed.shape[1:])
    return pushed.diagonal(dim1=0, dim2=-1).sum(dim=-1)


class NeuralCDEBlock(PararealODEBlock):
    """A neural CDE over series of ``length`` observations, solved by parareal over
    ``num_slices`` chunks of the series.

    The fine propagator is RK4 (3/8 rule) with one step per unit of time (by default), so with
    K = N (e.g. ``max_iters=None, tol=0``) the output equals ``torchcde.cdeint(X, func, z0,
    X.interval, method="rk4", options={"step_size": 1})[:, -1]`` for the path X of the same
    coefficients, to rounding. N must divide L-1 (each chunk holds m = (L-1)/N observations):
    pad the series otherwise, e.g. by repeating its last observation, and give the plain model
    the same padded series. ``func``'s parameters are the only ones (state_dict keys
    ``func.*``); no gradient flows into the path's coefficients.

    Args:
        func: the CDE function, torchcde's signature: f(t, z) -> [batch, hidden, channels]. It
            is called with one time per row of a batch of several chunks' samples stacked (the
            coarse step passes its chunk's times), so it should not depend on t: give the
            time to the path as a channel instead.
        length: L, observations per series, at t = 0, 1, ..., L-1 (torchcde's default knots).
        num_slices: N, chunks of the series.
        interpolation: ``"cubic"`` (coefficients [B, L-1, 4C] from torchcde's
            ``hermite_cubic_coefficients_with_backward_differences`` or ``natural_cubic_coeffs``)
            or ``"linear"`` (``linear_interpolation_coeffs``, [B, L, C]).
        coarse_field: the coarse propagator's field, a name from ``CDE_COARSE_FIELDS``:
            ``"increment"`` (the chunk's increment: f(z) dX_n / span) or ``"log_ode"`` (the
            increment and the Levy area, Lie brackets of f by JVPs). It is constant over the
            chunk; ``options.coarse`` and ``coarse_steps`` say how it is solved (one step of
            that method is one log-ODE step). The default is the measured better: no more
            iterations than ``"log_ode"`` on ACSF1 and a 3-channel walk, often fewer, at a
            fraction of the coarse cost (docs/benchmarks/cde_coarse.md).
        cache_bytes: memory bound of the warm-start cache (see ``WarmStartCache``), per rank.
        steps_per_observation: s, RK4 steps of the fine propagator per unit of time (K = N
            is then ``cdeint`` with ``step_size=1/s``). On a rough path one step per
            observation is far from the CDE's exact solution, which the coarse step tracks
            better: a finer F is costlier but closer to G, so parareal needs fewer iterations.
        options: ``PararealOptions`` or a mapping of its fields; ``fine``/``fine_steps`` are set
            here. With ``warm_start`` and an ``index`` the start is the coarse sweep
            corrected by the per-sample cache's jumps (``_cached_guess``).
        **option_overrides: ``PararealOptions`` fields applied on top of ``options``.

    Attributes:
        stats: ``PararealStats`` of the last call: K is ``stats.forward_iters``, the share of
            the batch started from the cache ``stats.cache_hit_rate`` (None: no look-up).
        cache: the ``WarmStartCache`` (cumulative ``hits``/``lookups``, ``nbytes``).
    """

    def __init__(
        self,
        func: nn.Module,
        length: int,
        num_slices: int,
        *,
        interpolation: str = "cubic",
        coarse_field: str = "increment",
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        steps_per_observation: int = 1,
        options: PararealOptions | Mapping[str, Any] | None = None,
        **option_overrides: Any,
    ) -> None:
        if not isinstance(func, nn.Module):
            raise ValueError(f"func must be an nn.Module f(t, z), got {type(func).__name__}")
        if not isinstance(length, int) or length < 2:
            raise UserInputError(f"length must be an integer >= 2 (observations), got {length!r}")
        if not isinstance(num_slices, int) or num_slices < 1 or (length - 1) % num_slices:
            raise UserInputError(
                f"num_slices must be an integer >= 1 that divides length - 1 = {length - 1} "
                f"(chunks of whole steps), got {num_slices!r}; pad the series (e.g. repeat its "
                f"last observation) to a length whose L - 1 it divides"
            )
        if interpolation not in INTERPOLATIONS:
            raise UserInputError(f"interpolation must be one of {INTERPOLATIONS}, got "
                             f"{interpolation!r}")
        if coarse_field not in CDE_COARSE_FIELDS:
            raise UserInputError(f"coarse_field must be one of {tuple(CDE_COARSE_FIELDS)}, got "
                             f"{coarse_field!r}")
        if not isinstance(steps_per_observation, int) or steps_per_observation < 1:
            raise UserInputError(f"steps_per_observation must be an integer >= 1, got "
                             f"{steps_per_observation!r}")
        self.length, self.interpolation, self.coarse_field = length, interpolation, coarse_field
        self.steps_per_observation = steps_per_observation
        options = dataclasses.replace(PararealOptions.create(options, **option_overrides),
                                      num_slices=num_slices, fine="rk4",
                                      fine_steps=(length - 1) // num_slices * steps_per_observation)
        super().__init__(func, 0.0, float(length - 1), options)
        self.cache = WarmStartCache(cache_bytes)

    def forward(
        self,
        coeffs: torch.Tensor,
        z0: torch.Tensor,
        index: torch.Tensor | None = None,
        boundaries: bool = False,
    ) -> torch.Tensor:
        """z at the end of the series, [batch, hidden], or with ``boundaries`` z at the N + 1
        chunk boundaries, [N + 1, batch, hidden] (row 0 is z0).

        Args:
            coeffs: the batch's torchcde coefficients (see ``interpolation``).
            z0: initial state [batch, hidden].
            index: each sample's index in its data set, [batch]: the warm-start cache's keys
                (used with ``options.warm_start``). Keys must name one sample each across the
                calls of this block (e.g. training samples only); a clash is still correct,
                only a worse start. Without one the start is the coarse sweep.
            boundaries: return the states at all chunk boundaries (free: parareal solves
                for them), e.g. for a head that pools them.
        """
        options = self.options
        if options.fine != "rk4" or options.fine_steps != self._steps:
            raise UserInputError(f"NeuralCDEBlock's fine propagator is rk4 with fine_steps="
                             f"{self._steps} ({self.steps_per_observation} a unit of time), got "
                             f"{options.fine} x "
                             f"{options.fine_steps}")
        if not (torch.is_tensor(z0) and z0.dim() == 2 and z0.shape[0] == coeffs.shape[0]):
            raise ValueError(f"z0 must be [batch, hidden] with coeffs' batch "
                             f"{coeffs.shape[0]}, got {tuple(getattr(z0, 'shape', ()))}")
        n = self.num_slices
        table = path_segments(coeffs, self.interpolation, self.length).to(z0.dtype)
        self._fields = SliceFields(_PathField(self.func, table), n)
        increments, areas = chunk_log_signature(table, n, CDE_COARSE_FIELDS[self.coarse_field])
        self._coarse_fields = _ChunkFields(self.func, increments, areas,
                                           float((self.length - 1) // n))
        guess, rate, cached = None, None, options.warm_start and index is not None
        if cached:
            index = torch.as_tensor(index).reshape(-1)
            if index.shape[0] != z0.shape[0]:
                raise ValueError(f"index must hold one integer per sample ({z0.shape[0]}), "
                                 f"got shape {tuple(index.shape)}")
            guess, rate = self._cached_guess(z0, index)
        # the per-sample cache is this block's only warm start: without an index (or on a miss)
        # the start is the coarse sweep, never the previous call's batch (other samples)
        self._previous = None
        self.return_trajectory = cached or boundaries
        out = super().forward(z0, guess)
        self.stats.cache_hit_rate = rate
        if cached:
            self.cache.store(index, self._jumps(out[self._rows].detach()))
        return out[-1] if cached and not boundaries else out

    @property
    def _steps(self) -> int:
        return (self.length - 1) // self.num_slices * self.steps_per_observation

    @property
    def _rows(self) -> range:
        """Boundary rows this rank solves from and to: all, or its chunk's lo..hi."""
        own = range(self.num_slices) if self.time_group is None else self.time_group.chunk(
            self.num_slices)
        return range(own.start, own.stop + 1)

    def _cached_guess(
        self, z0: torch.Tensor, index: torch.Tensor
    ) -> tuple[torch.Tensor | None, float]:
        """U^0 and the hit rate; U^0 is None when all miss (the block's own sweep then).

        U^0 is the coarse sweep with the current weights, each chunk's step corrected by the
        jump F_n(U_n) - G_n(U_n) the sample's converged solve had when last seen:
        U^0_n+1 = G_n(U^0_n) + J_n, a parareal iteration with the previous fine values (misses:
        J = 0, the plain coarse sweep). Unlike the cached boundaries themselves, this follows
        the weights' change through G: after a training epoch the boundaries have drifted by
        more than the coarse sweep's error, the jumps by little. On a time group the sweep is
        pipelined like the block's own (the state entering a chunk comes from the previous
        rank); ranks see the same indices in the same order, so their caches hit and miss
        alike and all take the same branch."""
        rows = self._rows
        own = range(rows.start, rows.stop - 1)
        found, values = self.cache.lookup(index, z0.new_empty((len(own), *z0.shape)))
        rate = float(found.float().mean()) if len(found) else 0.0
        if values is None:
            return None, rate
        jumps = z0.new_zeros((len(own), *z0.shape))
        jumps[:, found.to(z0.device)] = values
        guess = z0.new_zeros((self.num_slices + 1, *z0.shape))
        group, propagator = self.time_group, self.options.propagator("coarse")
        times = self._times.to(dtype=z0.dtype, device=z0.device)
        with torch.no_grad():
            state = z0 if own.start == 0 else group.recv_prev(z0)
            guess[own.start] = state
            for n in own:
                one = range(n, n + 1)
                state = propagator(self._coarse_fields.field(one, state.shape[0]),
                                   times[n : n + 1], times[n + 1 : n + 2] - times[n : n + 1],
                                   state, Work()) + jumps[n - own.start]
                guess[n + 1] = state
            if own.stop < self.num_slices:
                group.send_next(state)
        return guess, rate

    @torch.no_grad()
    def _jumps(self, states: torch.Tensor) -> torch.Tensor:
        """F_n(U_n) - G_n(U_n) of this rank's chunks at the converged boundaries ``states``
        (rows lo..hi), one batched coarse call: what ``_cached_guess`` adds back."""
        own, batch = range(self._rows.start, self._rows.stop - 1), states.shape[1]
        times = self._times.to(dtype=states.dtype, device=states.device)
        coarse = self.options.propagator("coarse")(
            self._coarse_fields.field(own, batch), times[own.start : own.stop],
            times[own.start + 1 : own.stop + 1] - times[own.start : own.stop],
            states[:-1].reshape(-1, *states.shape[2:]), Work())
        return states[1:] - coarse.view_as(states[1:])
