"""Parts every classifier of the zoo shares: the stem -> block -> head frame and the parareal
ODE block built from a vector-field factory."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from pnode_zoo.ode import PararealODEBlock, PararealOptions

__all__ = ["StemBlockHead", "ZOO_PARAREAL", "parareal_block", "parareal_options"]


class StemBlockHead(nn.Module):
    """stem -> block -> head; ``nfe`` reports the block's evaluations of f (None for ResNets).

    Args:
        stem: maps the input to the block's state.
        block: the depth part (an ODE block or a stack of residual blocks).
        head: maps the final state to logits.
    """

    def __init__(self, stem: nn.Module, block: nn.Module, head: nn.Module) -> None:
        super().__init__()
        self.stem, self.block, self.head = stem, block, head

    @property
    def nfe(self) -> int | None:
        """Evaluations of the vector field in the last forward call; None without an ODE."""
        return getattr(self.block, "nfe", None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.block(self.stem(x)))


#: The zoo's parareal defaults, on top of ``PararealOptions``' own: four slices of one RK4
#: step (the grid of the plain models' four steps), one Euler coarse step, and a tolerance
#: that makes the network the fine NODE's within 1e-3 (the ``max_iters`` cap is N).
ZOO_PARAREAL: dict[str, object] = {"num_slices": 4, "fine_steps": 1, "tol": 1e-3}


def parareal_options(parareal: PararealOptions | Mapping[str, Any] | None) -> PararealOptions:
    """The options of a zoo model's parareal block: ``ZOO_PARAREAL`` updated by ``parareal``
    (a mapping, e.g. a YAML ``parareal:`` section), or ``parareal`` itself when complete.

    Args:
        parareal: a ``PararealOptions``, a mapping of some of its fields, or None.
    """
    if isinstance(parareal, PararealOptions):
        return parareal
    return PararealOptions.create({**ZOO_PARAREAL, **(parareal or {})})


def parareal_block(
    make_field: Callable[[], nn.Module],
    t1: float,
    per_slice: bool,
    parareal: PararealOptions | Mapping[str, Any] | None,
) -> PararealODEBlock:
    """A PararealODEBlock over [0, t1] with one field shared by all slices or one per slice.

    Args:
        make_field: builds one vector field.
        t1: integration horizon.
        per_slice: one field per slice (a continuous-depth ResNet of N stages).
        parareal: the block's options (see ``parareal_options``).
    """
    options = parareal_options(parareal)
    field = [make_field() for _ in range(options.num_slices)] if per_slice else make_field()
    return PararealODEBlock(field, 0.0, t1, options)
