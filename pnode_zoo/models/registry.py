"""The model registry: architectures by name, after timm's ``register_model``/``create_model``.

Every entry is a function ``fn(num_classes, input_shape, **options) -> nn.Module``. Its
docstring's ``Args:`` section is the model's documentation (``python -m pnode_zoo models``).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

ModelFn = Callable[..., nn.Module]
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
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build the registered model ``name`` with the given options.

    Args:
        name: a registered model name (see ``list_models()``).
        **kwargs: options of that model; unknown ones raise ValueError listing the valid ones.
    """
    fn = model_entry(name)
    accepted = inspect.signature(fn).parameters
    unknown = sorted(set(kwargs) - set(accepted))
    if unknown:
        raise ValueError(
            f"model {name!r} has no option {', '.join(map(repr, unknown))}; "
            f"its options are: {', '.join(accepted)}"
        )
    return fn(**kwargs)
