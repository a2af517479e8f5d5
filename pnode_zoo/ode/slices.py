"""The vector fields of a parareal solve's slices, called for a contiguous set of slices at once.

A propagator solves several slices stacked along the batch dimension and hands the field one
time per slice. ``SliceFields.field`` turns that into calls a field understands:

- a field written for torchdiffeq sees what torchdiffeq would give it, a 0-d ``t`` and one
  slice's batch: the set of slices runs as one ``torch.func.vmap`` over the slice axis (one
  call of f per stage whatever the number of slices);
- a field that declares ``time_per_sample = True`` (the zoo's own fields) is called once on
  the whole stack with one time per sample, which needs no vmap;
- per-slice modules (one field per slice, "parallel in parameter") run as one vmapped
  ``functional_call`` over their parameters, stacked once per call of the solve.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, vmap

__all__ = ["Field", "SliceFields", "Stacked", "select"]

#: Per-slice parameters and buffers, each stacked along a new first (slice) dimension.
Stacked = tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]
Field = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class SliceFields:
    """Vector fields of the slices of a parareal solve.

    Args:
        func: one field f(t, x) shared by all slices (an ``nn.Module`` or any callable), or a
            sequence of ``num_slices`` modules of one architecture, one per slice.
        num_slices: number of time slices.
        params: the tensors to differentiate for a shared field (None: its ``parameters()``
            when it is a module, else none), as torchdiffeq's ``adjoint_params``.
    """

    def __init__(
        self,
        func: Field | Sequence[nn.Module],
        num_slices: int,
        params: Sequence[torch.Tensor] | None = None,
    ) -> None:
        self.per_slice = isinstance(func, (list, tuple, nn.ModuleList))
        if not self.per_slice and not callable(func):
            raise ValueError(f"func must be callable as f(t, x), got {type(func).__name__}")
        self.modules: list = list(func) if self.per_slice else [func]
        if self.per_slice:
            if len(self.modules) != num_slices:
                raise ValueError(
                    f"func: a per-slice sequence needs num_slices={num_slices} modules, "
                    f"got {len(self.modules)}"
                )
            if not all(isinstance(m, nn.Module) for m in self.modules):
                raise ValueError("func: a per-slice sequence must hold nn.Modules")
            layout = _layout(self.modules[0])
            if any(_layout(module) != layout for module in self.modules[1:]):
                raise ValueError("func: the per-slice modules must share one architecture")
        # None: read the modules' parameters at each call (requires_grad may change)
        self._params = None if params is None else list(params)
        self.time_per_sample = bool(getattr(self.modules[0], "time_per_sample", False))

    def parameters(self) -> list[torch.Tensor]:
        """Trainable parameters, slice by slice in module order (the autograd inputs)."""
        if self._params is not None:
            return [p for p in self._params if p.requires_grad]
        modules = [m for m in self.modules if isinstance(m, nn.Module)]
        return [p for module in modules for p in module.parameters() if p.requires_grad]

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

    def field(self, slices: range, batch_size: int, selected: Stacked | None = None) -> Field:
        """f(t, x) of ``slices``: t holds one time per slice, x their samples stacked in order.

        Args:
            slices: contiguous slice indices.
            batch_size: samples per slice.
            selected: per-slice parameters and buffers of ``slices`` (``select``) to call the
                modules with; None calls the module of a single slice directly.
        """
        groups = len(slices)
        if self.per_slice and selected is not None:
            return _vmapped(self.modules[0], selected, groups, batch_size)
        func = self.modules[slices.start] if self.per_slice else self.modules[0]
        if groups == 1:
            return lambda t, x: func(t[0], x)
        if self.per_slice:
            raise ValueError("several per-slice fields need their stacked parameters")
        if self.time_per_sample:
            return lambda t, x: func(t.repeat_interleave(batch_size), x)

        def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
            out = vmap(func)(t, x.reshape(groups, batch_size, *x.shape[1:]))
            return out.reshape(x.shape)

        return field


def _vmapped(base: nn.Module, selected: Stacked, groups: int, batch_size: int) -> Field:
    params, buffers = selected

    def call(p, b, t, x):
        return functional_call(base, (p, b), (t, x))

    def field(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
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
