"""Every data module's docstring describes every argument it takes, though a subclass writes only
the entries it adds or describes otherwise (``--data.help`` reads them from ``__doc__``)."""

from __future__ import annotations

import inspect

import docstring_parser
import pytest

import pnode_zoo.data as data
from pnode_zoo.data import TensorDataModule


def described(cls: type) -> dict[str, str]:
    """Argument name -> description, as jsonargparse's docstring parser reads ``cls.__doc__``."""
    return {p.arg_name: p.description for p in docstring_parser.parse(cls.__doc__).params}


def arguments(cls: type) -> list[str]:
    return [name for name in inspect.signature(cls.__init__).parameters if name != "self"]


@pytest.mark.parametrize("name", [n for n in data.__all__ if n.endswith("DataModule")])
def test_every_argument_is_described_in_signature_order(name: str) -> None:
    cls = getattr(data, name)
    descriptions = described(cls)
    assert list(descriptions) == arguments(cls)
    assert all(descriptions.values())


def test_entries_come_from_the_nearest_class_that_writes_them() -> None:
    forecast, lotka = described(data.ForecastDataModule), described(data.LotkaVolterraDataModule)
    base = described(TensorDataModule)
    assert forecast["num_workers"] == base["num_workers"]
    assert forecast["seed"] == "seed of the shuffle order."  # TrajectoryDataModule's own
    assert lotka["seed"] == "seed of the noise and of the shuffle order."  # its own
    mnist, cifar = described(data.MNISTDataModule), described(data.CIFAR10DataModule)
    assert mnist["root"] == cifar["root"]
    assert mnist["augment"] != cifar["augment"]
    assert inspect.getdoc(data.MNISTDataModule).startswith("MNIST handwritten digits")


def test_a_subclass_without_args_keeps_its_docstring() -> None:
    class Plain(TensorDataModule):
        """Nothing documented."""

        def __init__(self, **splits: object) -> None:
            super().__init__()

    class Inherits(TensorDataModule):
        """Summary.

        Args:
            extra: its own argument.
        """

        def __init__(self, extra: int = 1, batch_size: int = 8) -> None:
            super().__init__(batch_size)

    assert Plain.__doc__ == "Nothing documented."
    assert described(Inherits) == {"extra": "its own argument.",
                                   "batch_size": described(TensorDataModule)["batch_size"]}
