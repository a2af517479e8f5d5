"""pnode_zoo: a PyTorch Lightning model zoo of parallel-in-time (parareal) neural ODEs."""

from pnode_zoo.models import create_model, list_models

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "list_models"]
