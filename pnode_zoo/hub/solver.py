"""What a card says about how its network solves its differential equation, read off the network.

``describe_solver`` is called by ``export`` on the network it exports, so the card's ``solver``
entry is generated from the built model (its options resolved, defaults included), never
written by hand. It describes the neural CDEs (``ncde``, ``ncde_parareal``): the control path's
interpolation, the solver and its steps per observation, the readout, and for the parareal twin
its chunks, propagators, tolerance and warm start. Other networks get None (their cards' own
``arch_args`` say how they solve, e.g. ``parareal: {num_slices: ...}``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from pnode_zoo.models.cde import NeuralCDE
from pnode_zoo.ode import NeuralCDEBlock

__all__ = ["COARSE_FIELDS", "PATHS", "describe_solver"]

#: interpolation option -> (torchcde's function making the coefficients, in words)
PATHS = {
    "hermite": ("torchcde.hermite_cubic_coefficients_with_backward_differences",
                "Hermite cubic with backward differences"),
    "linear": ("torchcde.linear_interpolation_coeffs", "linear"),
}
#: coarse_field option -> what the coarse step reads of a chunk
COARSE_FIELDS = {"increment": "increment",
                 "log_ode": "log-signature of depth 2 (increment and Lévy area)"}


def _parareal(block: NeuralCDEBlock) -> dict[str, Any]:
    options = block.options
    chunk = (block.length - 1) // block.num_slices
    return {
        "chunks": block.num_slices,
        "observations_per_chunk": chunk,
        "fine": options.fine,
        "fine_steps_per_chunk": options.fine_steps,
        "coarse": options.coarse,
        "coarse_steps": options.coarse_steps,
        "coarse_field": block.coarse_field,
        "tol": options.tol,
        "max_iters": block.num_slices if options.max_iters is None else options.max_iters,
        "warm_start": options.warm_start,
        "warm_start_cache_mib": block.cache.max_bytes / 2**20,
        "backward": options.backward,
        "recompute": options.recompute,
    }


def _summary(solver: dict[str, Any]) -> str:
    """The entry in one paragraph of words."""
    path = (f"Path: torchcde's {PATHS[solver['interpolation']][1]} interpolation through "
            f"{solver['observations']} observations (knots t = 0, 1, ...)"
            f"{', time as a channel' if solver['time_channel'] else ''}, values x "
            f"{solver['input_scale']:g}.")
    grid = (f"{solver['steps_per_observation']} torchdiffeq rk4 (3/8 rule) step(s) per "
            f"observation, {solver['steps']} in all")
    readout = ("the final state z(end)" if solver["readout"] == "final" else
               f"z at the {solver['readout_states']} boundaries of "
               f"{solver['readout_states'] - 1} equal chunks, side by side")
    head = f"Readout: a linear head{' after BatchNorm1d' if solver['head_norm'] else ''} " \
           f"on {readout}."
    parareal = solver.get("parareal")
    if parareal is None:
        solve = f"Solver: torchcde.cdeint, {grid}; gradient: {solver['gradient']}."
        return " ".join([path, solve, head])
    warm = (f"warm start from a per-sample cache of each sample's jumps F - G (keyed by the "
            f"batch's index, data.with_index; {parareal['warm_start_cache_mib']:g} MiB per rank; "
            "a missing index or entry starts from the coarse sweep; not saved with the weights)"
            if parareal["warm_start"] else "cold start from the coarse sweep")
    solve = (f"Solver: parareal over {parareal['chunks']} chunks of "
             f"{parareal['observations_per_chunk']} observations (the fine grid of cdeint: "
             f"{grid}, {parareal['fine_steps_per_chunk']} per chunk); coarse propagator "
             f"{parareal['coarse_steps']} {parareal['coarse']} step(s) per chunk of the field "
             f"held at the chunk's {COARSE_FIELDS[parareal['coarse_field']]}; "
             f"stops at a relative change below tol {parareal['tol']:g}, at most "
             f"{parareal['max_iters']} iterations; {warm}; gradient: {solver['gradient']}.")
    return " ".join([path, solve, head])


def describe_solver(net: nn.Module, input_shape: Sequence[int]) -> dict[str, Any] | None:
    """The card's ``solver`` entry of ``net``; None for a network that is not a neural CDE.

    Args:
        net: the exported network.
        input_shape: its inputs' (channels, length).
    """
    if not isinstance(net, NeuralCDE):
        return None
    block = net.block
    twin = isinstance(block, NeuralCDEBlock)
    steps = block.steps_per_observation if twin else block.steps
    length = int(input_shape[-1])
    solver: dict[str, Any] = {
        "equation": "neural CDE dz = f(z) dX(t) (Kidger et al. 2020)",
        "interpolation": net.interpolation,
        "path": PATHS[net.interpolation][0],
        "observations": length,
        "time_channel": net.time_channel,
        "input_scale": net.input_scale,
        "method": "rk4",
        "steps_per_observation": steps,
        "steps": (length - 1) * steps,
        "solver": "parareal (NeuralCDEBlock)" if twin else "torchcde.cdeint",
        "readout": "final" if net.chunks == 0 else "boundaries",
        "readout_states": net.chunks + 1 if net.chunks else 1,
        "head_norm": isinstance(net.head, nn.Sequential),
    }
    if twin:
        solver["parareal"] = _parareal(block)
        backward = block.options.backward
        solver["gradient"] = (f"the exact gradient of the computed output (backward: {backward})"
                              if backward == "unrolled" else f"backward: {backward}")
    else:
        solver["gradient"] = ("torchcde's continuous adjoint" if block.adjoint
                              else "backpropagation through the solver's steps")
    solver["summary"] = _summary(solver)
    return solver
