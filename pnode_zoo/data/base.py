"""Shared machinery of the in-memory data modules: seeded splits and deterministic loaders."""

from __future__ import annotations

import inspect
import math
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from sklearn.model_selection import train_test_split
from torch.utils.data import DataLoader, Dataset, TensorDataset

from pnode_zoo.docstrings import split_args
from pnode_zoo.errors import UserInputError

__all__ = [
    "TensorDataModule", "check_split", "inherit_args", "stratified_split", "tensor_dataset",
]


def stratified_split(
    labels: np.ndarray, fraction: float | int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Indices (kept, held out) of a seeded split that holds out ``fraction`` of each class.

    Where stratification is impossible (a class with a single sample, or fewer held-out samples
    than classes, as in some small UCR training sets), the split is seeded but not stratified.

    Args:
        labels: class label of every sample.
        fraction: share of the samples to hold out, in (0, 1), or their number if an int.
        seed: random seed of the split.
    """
    indices = np.arange(len(labels))
    _, counts = np.unique(labels, return_counts=True)
    integer = isinstance(fraction, int | np.integer)
    held_out_size = fraction if integer else math.ceil(fraction * len(labels))
    stratifiable = counts.min() >= 2 and len(counts) <= held_out_size <= len(labels) - len(counts)
    kept, held_out = train_test_split(
        indices, test_size=fraction, stratify=labels if stratifiable else None, random_state=seed
    )
    return np.sort(kept), np.sort(held_out)


class TensorDataModule(pl.LightningDataModule):
    """A data module whose splits are in-memory tensors, built once by ``build_splits``.

    Subclasses set ``num_classes`` and ``input_shape`` in ``__init__`` (the CLI links them into
    the model) and implement ``build_splits`` returning the train/val/test datasets. A
    subclass's ``Args:`` needs only the arguments it adds or describes otherwise: the others'
    entries are taken from its base classes (``inherit_args``), so ``--data.help`` still
    describes every argument.

    Args:
        batch_size: samples per training batch (evaluation uses the same size).
        seed: seed of the split and of the training shuffle order.
        num_workers: loader worker processes (0: load in the main process).
    """

    num_classes: int
    input_shape: tuple[int, ...]
    #: how raw samples became model inputs, set by ``build_splits`` (for pretrained cards):
    #: ``scale`` (a factor applied first), per-channel ``mean`` and ``std`` along
    #: ``channel_axis`` of a sample, or ``per_series`` (each series z-normalised on its own)
    preprocessing: dict[str, Any] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        cls.__doc__ = inherit_args(cls)

    def __init__(self, batch_size: int = 64, seed: int = 0, num_workers: int = 0) -> None:
        super().__init__()
        if batch_size < 1:
            raise UserInputError(f"data.batch_size must be at least 1, got {batch_size}")
        if num_workers < 0:
            raise UserInputError(f"data.num_workers must be at least 0, got {num_workers}")
        self.batch_size = batch_size
        self.seed = seed
        self.num_workers = num_workers
        # The training loader's generator lives as long as the data module, so that a checkpoint
        # can hold its state (RandomStateCheckpoint) and a resumed run draws the batches an
        # uninterrupted one would.
        self.train_generator = torch.Generator().manual_seed(seed)
        self.splits: dict[str, Dataset] = {}
        self.indices: dict[str, np.ndarray] = {}  # positions in the source data, where known

    def build_splits(self) -> dict[str, Dataset]:
        """Return {"train", "val", "test"} datasets; called once, on first ``setup``."""
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        if not self.splits:
            splits = self.build_splits()
            for split, dataset in splits.items():
                check_split(split, dataset, self.input_shape)
            self.splits = splits

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = self.train_generator if shuffle else torch.Generator().manual_seed(self.seed)
        return DataLoader(
            self.splits[split], batch_size=self.batch_size, shuffle=shuffle, generator=generator,
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def predict_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


def inherit_args(cls: type) -> str | None:
    """``cls``'s docstring with an ``Args:`` entry for every argument of its ``__init__``, in
    the signature's order: its own entry, else the nearest base class's (an argument no class
    documents stays undocumented). jsonargparse reads the descriptions from ``__doc__``.

    Args:
        cls: the class; its bases' docstrings are read as they are (already completed).
    """
    docs = [split_args(inspect.cleandoc(klass.__doc__ or "")) for klass in cls.__mro__]
    head, _, tail = docs[0]
    names = [p.name for p in inspect.signature(cls.__init__).parameters.values()
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)][1:]  # after self
    lines = [line for name in names
             for line in next((entries[name] for _, entries, _ in docs if name in entries), [])]
    if not lines:
        return cls.__doc__
    head = f"{head.rstrip()}\n\n" if head.strip() else ""
    return "\n".join([f"{head}Args:", *lines, *([tail] if tail else [])])


def check_split(split: str, dataset: Dataset, input_shape: tuple[int, ...]) -> None:
    """ValueError naming the problem if a split is empty, its samples are not ``input_shape``,
    or its tensors hold NaN or Inf (nothing would train on them).

    Args:
        split: "train", "val" or "test", for the message.
        dataset: the split; a TensorDataset's tensors are checked whole, any other dataset's
            first sample for its shape.
        input_shape: the shape the data module declares for one input sample.
    """
    if len(dataset) == 0:
        raise UserInputError(
            f"data: the {split} split is empty; give the data module more samples or a "
            "larger share for this split"
        )
    shape = tuple(dataset[0][0].shape)
    if shape != tuple(input_shape):
        raise UserInputError(
            f"data: {split} samples have shape {shape}, but the data module declares "
            f"input_shape {tuple(input_shape)} (channels first); check the files' format"
        )
    for tensor in getattr(dataset, "tensors", ()):
        if tensor.is_floating_point():
            bad = ~torch.isfinite(tensor.flatten(1) if tensor.dim() > 1 else tensor[:, None])
            rows = bad.any(dim=1).nonzero().flatten()
            if len(rows):
                raise UserInputError(
                    f"data: {len(rows)} {split} samples contain NaN or Inf values (the first "
                    f"is sample {int(rows[0])}); fill in or drop the missing values"
                )


def tensor_dataset(inputs: np.ndarray, labels: np.ndarray,
                   index: np.ndarray | None = None) -> TensorDataset:
    """A float32 input / int64 label TensorDataset, with an int64 third tensor if ``index``.

    Args:
        inputs: the samples.
        labels: their labels.
        index: each sample's key (e.g. its position in the source data), or None.
    """
    tensors = [torch.as_tensor(inputs, dtype=torch.float32),
               torch.as_tensor(labels, dtype=torch.long)]
    if index is not None:
        tensors.append(torch.as_tensor(index, dtype=torch.long))
    return TensorDataset(*tensors)
