"""The model registry: architectures by name, after timm's ``register_model``/``create_model``.

Every entry is a function ``fn(num_classes, input_shape, **options) -> nn.Module``. Its
docstring's ``Args:`` section is the model's documentation (``python -m pnode_zoo models``).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

from pnode_zoo.errors import UserInputError, did_you_mean

__all__ = ["KINDS", "ModelFn", "create_model", "list_models", "model_entry", "register_model"]

ModelFn = Callable[..., nn.Module]
KINDS = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string"}
_MODELS: dict[str, ModelFn] = {}


def register_model(fn: ModelFn) -> ModelFn:
    """Register a model entry point under its function name (a decorator)."""
    if fn.__name__ in _MODELS:
        raise ValueError(f"model {fn.__name__!r} is registered twice")
    _MODELS[fn.__name__] = fn
    return fn


def list_models(pattern: str = "*") -> list[str]:
    """Names of the registered models that match a shell-style wildcard, sorted.

    Args:
        pattern: wildcard such as ``"odenet*"``.
    """
    return sorted(name for name in _MODELS if fnmatch.fnmatch(name, pattern))


def model_entry(name: str) -> ModelFn:
    """The entry point registered as ``name``; ValueError naming the known models otherwise.

    Args:
        name: a registered model name.
    """
    if name not in _MODELS:
        raise UserInputError(
            f"unknown model {name!r}{did_you_mean(name, _MODELS)}; known models: "
            f"{', '.join(list_models())}"
            + ("; pretrained names (<architecture>.<data>) go to pnode_zoo.create_model"
               if "." in name else "")
        )
    return _MODELS[name]


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name`` with the given options (``pnode_zoo.create_model``
    also takes pretrained names).

    Args:
        name: a registered model name (see ``list_models()``).
        **kwargs: options of that model; unknown ones raise ValueError listing the valid ones.
    """
    fn = model_entry(name)
    accepted = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise UserInputError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}"
            f"{did_you_mean(unknown[0], accepted)}; its options are: {', '.join(accepted)}"
        )
    for key, value in kwargs.items():
        default = accepted[key].default
        kind = type(default).__name__
        if value is not None and kind in KINDS and not _same_kind(value, default):
            raise UserInputError(
                f"model {name!r} option {key} must be {KINDS[kind]} (like its default "
                f"{default!r}), got {value!r}"
            )
    return fn(**kwargs)


def _same_kind(value: object, default: int | float | bool | str) -> bool:
    """Whether ``value`` may stand where ``default`` does (an int may stand for a float)."""
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))
