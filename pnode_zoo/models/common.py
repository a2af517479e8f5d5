"""Parts the zoo's models share: the stem -> block -> head frame, the plain and parareal ODE
blocks built from a vector-field factory, and ``register_twins``, which makes a plain and a
parareal model from one builder (after timm's one ``_create_*`` builder per family)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from pnode_zoo.docstrings import split_args
from pnode_zoo.models.registry import ModelFn, register_model
from pnode_zoo.ode import ODEBlock, PararealODEBlock, PararealOptions
from pnode_zoo.ode.methods import MODEL_TOLERANCES

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


def torchdiffeq_block(make_field: Callable[[], nn.Module], *, t1: float = 1.0,
                      method: str = "rk4", steps: int = 4, rtol: float = MODEL_TOLERANCES.rtol,
                      atol: float = MODEL_TOLERANCES.atol, adjoint: bool = False) -> ODEBlock:
    """The plain twin's block: one torchdiffeq solve over [0, t1] (a recipe of ``register_twins``).

    Args:
        make_field: builds the vector field.
        t1: integration horizon [0, t1].
        method: torchdiffeq method.
        steps: fixed-grid steps over [0, t1].
        rtol: relative tolerance (adaptive methods).
        atol: absolute tolerance (adaptive methods).
        adjoint: backpropagate with torchdiffeq's continuous adjoint.
    """
    return ODEBlock(make_field(), 0.0, t1, method, steps, rtol, atol, adjoint)


def parareal_block(
    make_field: Callable[[], nn.Module],
    *,
    t1: float = 1.0,
    per_slice: bool = False,
    parareal: PararealOptions | Mapping[str, Any] | None = None,
) -> PararealODEBlock:
    """The parareal twin's block over [0, t1] (a recipe of ``register_twins``).

    Args:
        make_field: builds one vector field.
        t1: integration horizon [0, t1].
        per_slice: one vector field per slice (a continuous-depth ResNet of N stages) instead
            of one shared field.
        parareal: the block's ``PararealOptions`` (a mapping of some of its fields: slices,
            coarse and fine solvers, tolerance, iteration cap, gradient), on top of the zoo's
            defaults ``ZOO_PARAREAL`` (4 slices of one RK4 step, one Euler coarse step,
            tol 1e-3, the exact ``unrolled`` gradient).
    """
    options = parareal_options(parareal)
    field = [make_field() for _ in range(options.num_slices)] if per_slice else make_field()
    return PararealODEBlock(field, 0.0, t1, options)


class ResidualStack(nn.Module):
    """x_{k+1} = x_k + f_k(t_k, x_k): the forward-Euler network of k vector fields.

    Args:
        fields: one vector field per residual block.
    """

    def __init__(self, fields: Sequence[nn.Module]) -> None:
        super().__init__()
        self.fields = nn.ModuleList(fields)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for k, field in enumerate(self.fields):
            x = x + field(torch.tensor(k / len(self.fields), dtype=x.dtype), x)
        return x


def residual_stack(make_field: Callable[[], nn.Module], *, num_blocks: int = 4) -> ResidualStack:
    """The ResNet baseline's block (a recipe of ``register_twins``).

    Args:
        make_field: builds one vector field.
        num_blocks: residual blocks, each x + f_k(x) with its own vector field.
    """
    return ResidualStack([make_field() for _ in range(num_blocks)])


def register_twins(builder: ModelFn, **twins: tuple[Any, ...]) -> tuple[ModelFn, ...]:
    """Register a plain/parareal pair (or any set of twins) built by one ``builder``.

    The builder takes ``block``, a recipe whose positional arguments the builder fills, and the
    family's options, documented once in its ``Args:``. Each twin is registered under its
    name as the builder with its recipes: its options are the builder's and the recipes'
    keyword-only ones, its docstring a summary and their ``Args:`` entries, so ``create_model``
    checks and ``python -m pnode_zoo models NAME`` lists every option of either twin. A twin of
    several recipes nests them: each one but the last takes the next one's partial as its
    first argument, its ``block``.

    Args:
        builder: ``builder(block, **family_options) -> nn.Module``.
        **twins: per registry name, its summary (the first line is what ``models`` lists)
            and its recipes, outermost first.

    Returns:
        The registered entry points in the order of ``twins``, for the module to bind by name.
    """
    return tuple(register_model(_twin(name, summary, [builder, *recipes]))
                 for name, (summary, *recipes) in twins.items())


def _twin(name: str, summary: str, parts: list[Callable[..., nn.Module]]) -> ModelFn:
    """The entry point ``name``: the builder ``parts[0]`` around its recipes (see
    ``register_twins``)."""
    options_of = [  # the builder's after its ``block``, the recipes' keyword-only ones
        [p.name for j, p in enumerate(inspect.signature(part).parameters.values())
         if p.kind is p.KEYWORD_ONLY or (i == 0 and j > 0)]
        for i, part in enumerate(parts)
    ]

    def entry(**options: Any) -> nn.Module:
        inner: Callable[..., nn.Module] | None = None
        for part, names in zip(reversed(parts), reversed(options_of), strict=True):
            own = {key: options.pop(key) for key in names if key in options}
            inner = functools.partial(part, *([] if inner is None else [inner]), **own)
        if options:
            raise TypeError(f"{name}() got unexpected options: {', '.join(sorted(options))}")
        return inner()

    keyword = inspect.Parameter.KEYWORD_ONLY
    parameters = [inspect.signature(part).parameters[option].replace(kind=keyword)
                  for part, names in zip(parts, options_of, strict=True) for option in names]
    entry.__name__ = entry.__qualname__ = name
    entry.__module__ = parts[0].__module__
    entry.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        parameters, return_annotation=inspect.signature(parts[0]).return_annotation)
    args = [line for part, names in zip(parts, options_of, strict=True)
            for line in _args_entries(part, names)]
    entry.__doc__ = "\n".join([summary, "", "Args:", *args])
    return entry


def _args_entries(fn: Callable[..., Any], names: list[str]) -> list[str]:
    """The lines of ``fn``'s ``Args:`` entries for ``names``, in that order."""
    entries = split_args(inspect.getdoc(fn) or "")[1]
    missing = [n for n in names if n not in entries]
    if missing:
        raise TypeError(f"{fn.__qualname__} documents no {', '.join(missing)} in its Args:")
    return [line for n in names for line in entries[n]]
