"""Models (plain ``nn.Module``s) and their registry."""

from pnode_zoo.models import cde, image, image_resnet, series, trajectory  # noqa: F401  (registers)
from pnode_zoo.models.registry import create_model, list_models, model_entry, register_model

__all__ = ["create_model", "list_models", "model_entry", "register_model"]
