"""Pretrained weights by name: cards, safetensors, verified loading (after timm and the HF Hub).

``list_pretrained()`` names the shipped models (``<architecture>.<data>``),
``create_model(name, pretrained=True)`` builds one with its weights, ``load_pretrained`` also
takes a directory or a URL and returns the model and its ``ModelCard``, ``create_transform``
turns raw samples into the model's inputs, and ``save_pretrained``/``from_pretrained`` write and
read the shareable directory layout (``config.json`` + ``model.safetensors`` + ``SHA256SUMS``).
"""

from pnode_zoo.hub.card import ModelCard, Preprocessing, create_transform
from pnode_zoo.hub.store import (
    create_model,
    from_pretrained,
    list_pretrained,
    load_pretrained,
    pretrained_card,
    save_pretrained,
)

__all__ = [
    "ModelCard",
    "Preprocessing",
    "create_model",
    "create_transform",
    "from_pretrained",
    "list_pretrained",
    "load_pretrained",
    "pretrained_card",
    "save_pretrained",
]
