"""The classes a card or a run's saved config may name: pnode_zoo's own tasks and data modules.

A card (``config.json``) and a run's ``config.yaml`` are data from wherever the directory came
from. Their class paths are looked up in a table built from the public classes of
``pnode_zoo.tasks`` and ``pnode_zoo.data``, never imported by name, so a card that names
``os.system`` (or a module that runs code when imported) is refused before anything of it
loads. Networks are built by registry name (``models.create_model``), never by class path.
The check that imports nothing, ``check_names``, is the card's (``hub.card``); this module
sits above the tasks, whose classes it lists.
"""

from __future__ import annotations

from typing import Any

from pnode_zoo.errors import UserInputError
from pnode_zoo.hub.card import PACKAGE, check_names

__all__ = ["project_classes", "resolve_class"]


def project_classes(kind: str) -> dict[str, type]:
    """The zoo's tasks (``kind="task"``) or data modules (``"data"``) by every name a config
    may give them: short (``Classifier``), public (``pnode_zoo.tasks.Classifier``) and defining
    module (``pnode_zoo.tasks.classification.Classifier``)."""
    import pytorch_lightning as pl

    from pnode_zoo import data, tasks

    package, base = {"task": (tasks, pl.LightningModule), "data": (data, pl.LightningDataModule)}[
        kind]
    table: dict[str, type] = {}
    for name in package.__all__:
        cls = getattr(package, name)
        if isinstance(cls, type) and issubclass(cls, base):
            defined = f"{cls.__module__}.{cls.__qualname__}"
            table.update(dict.fromkeys((name, f"{package.__name__}.{name}", defined), cls))
    return table


def resolve_class(spec: Any, kind: str, where: str) -> type:
    """The zoo's class that ``spec`` names; UserInputError (one sentence naming the class) for
    anything else, before any import of it.

    Args:
        spec: ``{"class_path": ..., "init_args": ...}``.
        kind: "task" or "data".
        where: what holds it, for messages.
    """
    class_path = check_names(spec, where)
    table = project_classes(kind)
    if class_path not in table:
        known = sorted({cls.__name__ for cls in table.values()})
        raise UserInputError(f"{where} names the class {class_path!r}, which is not one of "
                             f"{PACKAGE}'s {'tasks' if kind == 'task' else 'data modules'} "
                             f"({', '.join(known)}); it was not imported")
    return table[class_path]
