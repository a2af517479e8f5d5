"""The command line, ``python -m pnode_zoo`` (``app.main``).

Modules, each importing only those below it: ``app`` (the parser of every subcommand and the
dispatch) over ``lightning_cli`` (fit | validate | test | predict; ``inputs`` checks their
options), ``commands`` (models, pretrained, export) and ``dashboard``; ``messages`` (jsonargparse
errors as one sentence) and ``console`` (how a command ends, quiet output, W&B's mode) at the
bottom. ``main`` is imported on first use, so importing a module of the package stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["main"]


def __getattr__(name: str) -> Any:
    if name == "main":
        from pnode_zoo.cli.app import main

        return main
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
