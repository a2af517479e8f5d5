"""pnode_zoo: a PyTorch Lightning model zoo of parallel-in-time (parareal) neural ODEs.

The names below load their modules on first use, so ``import pnode_zoo`` stays cheap (no
torch, no Lightning) and the CLI answers ``--help`` at once.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

#: public name -> module that defines it (imported on first access)
_LAZY = {
    "create_model": "pnode_zoo.hub",
    "list_models": "pnode_zoo.models",
    "list_pretrained": "pnode_zoo.hub",
    "load_pretrained": "pnode_zoo.hub",
    "from_pretrained": "pnode_zoo.hub",
    "save_pretrained": "pnode_zoo.hub",
    "create_transform": "pnode_zoo.hub",
    "ModelCard": "pnode_zoo.hub",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
