"""Parts every classifier of the zoo shares: the stem -> block -> head frame and the parareal
ODE block built from a vector-field factory."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from pnode_zoo.ode import PararealODEBlock


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


def parareal_block(
    make_field: Callable[[], nn.Module],
    t1: float,
    num_slices: int,
    per_slice: bool,
    **parareal_options: object,
) -> PararealODEBlock:
    """A PararealODEBlock over [0, t1] with one field shared by all slices or one per slice.

    Args:
        make_field: builds one vector field.
        t1: integration horizon.
        num_slices: N, parareal time slices.
        per_slice: one field per slice (a continuous-depth ResNet of N stages).
        **parareal_options: the remaining ``PararealODEBlock`` arguments (coarse, fine, ...).
    """
    field = [make_field() for _ in range(num_slices)] if per_slice else make_field()
    return PararealODEBlock(field, 0.0, t1, num_slices, **parareal_options)
