"""The vector field of one time slice, or of a contiguous set of slices stacked along the batch.

Shared parameters: the stacked field is the module itself, called with one time per sample.
Per-slice parameters: the modules' parameters are stacked once per call of the block
(``stack``), and the stacked field runs all slices in one vmapped ``functional_call``, so a set
of slices costs one call of f per stage whatever its size.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

Stacked = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]


class SliceFields:
    """Vector fields of the slices of a parareal block.

    Args:
        func: one module f(t, x) shared by all slices, or a sequence of ``num_slices`` modules
            of one architecture, one per slice.
        num_slices: number of time slices.
    """

    def __init__(self, func: nn.Module | Sequence[nn.Module], num_slices: int) -> None:
        self.per_slice = not isinstance(func, nn.Module) or isinstance(func, nn.ModuleList)
        self.modules: list[nn.Module] = list(func) if self.per_slice else [func]
        if self.per_slice:
            if len(self.modules) != num_slices:
                raise ValueError(
                    f"func: a per-slice sequence needs num_slices={num_slices} modules, "
                    f"got {len(self.modules)}"
                )
            layout = _layout(self.modules[0])
            if any(_layout(module) != layout for module in self.modules[1:]):
                raise ValueError("func: the per-slice modules must share one architecture")

    def parameters(self) -> list[torch.Tensor]:
        """Trainable parameters, slice by slice in module order (the autograd inputs)."""
        return [p for module in self.modules for p in module.parameters() if p.requires_grad]

    def one(self, n: int) -> nn.Module:
        """The field of slice n."""
        return self.modules[n] if self.per_slice else self.modules[0]

    def stack(self) -> Stacked | None:
        """Per-slice parameters and buffers stacked along a new first dim (detached)."""
        if not self.per_slice:
            return None
        with torch.no_grad():
            params = {
                name: torch.stack([dict(m.named_parameters())[name] for m in self.modules])
                for name, _ in self.modules[0].named_parameters()
            }
            buffers = {
                name: torch.stack([dict(m.named_buffers())[name] for m in self.modules])
                for name, _ in self.modules[0].named_buffers()
            }
        return params, buffers

    def batch(
        self, slices: range, batch_size: int, selected: Stacked | None
    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The field of ``slices`` stacked along the batch, each with ``batch_size`` samples.

        Args:
            slices: contiguous slice indices.
            batch_size: samples per slice.
            selected: ``select(stack(), slices)`` for per-slice parameters, else None.
        """
        if not self.per_slice:
            return self.modules[0]
        params, buffers = selected
        base, groups = self.modules[0], len(slices)

        def call(p, b, t, x):
            return functional_call(base, (p, b), (t, x))

        def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            t = t.expand(x.shape[0]).reshape(groups, batch_size)
            out = vmap(call)(params, buffers, t, x.reshape(groups, batch_size, *x.shape[1:]))
            return out.reshape(x.shape)

        return field


def select(stacked: Stacked | None, slices: range) -> Stacked | None:
    """The stacked parameters and buffers of a contiguous set of slices."""
    if stacked is None:
        return None
    params, buffers = stacked
    cut = slice(slices.start, slices.stop)
    return {k: v[cut] for k, v in params.items()}, {k: v[cut] for k, v in buffers.items()}


def _layout(module: nn.Module) -> list[tuple[str, torch.Size]]:
    return [(name, t.shape) for name, t in (*module.named_parameters(), *module.named_buffers())]
