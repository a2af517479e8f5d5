"""UCR/UEA time-series classification sets that ship with sktime (read offline).

sktime would try to download any name it does not bundle, so names are checked against the
bundled list first and sktime's loader is only ever called for a bundled set.
"""

from __future__ import annotations

from importlib.util import find_spec
from pathlib import Path
from typing import Literal

import numpy as np
from sklearn.preprocessing import LabelEncoder
from torch.utils.data import Dataset

from pnode_zoo.data.base import TensorDataModule, stratified_split, tensor_dataset
from pnode_zoo.errors import UserInputError, did_you_mean

__all__ = [
    "UCRDataModule",
    "bundled_ucr_names",
    "load_ucr_split",
    "pad_to",
    "sktime_data_dir",
    "standardise",
]


def sktime_data_dir() -> Path:
    """sktime's folder of bundled data sets (found without importing sktime, which is slow)."""
    spec = find_spec("sktime")
    if spec is None or not spec.submodule_search_locations:
        raise UserInputError("data.name needs sktime, which is not installed (pip install sktime)")
    return Path(spec.submodule_search_locations[0]) / "datasets" / "data"


def bundled_ucr_names() -> list[str]:
    """Names of the UCR/UEA classification sets bundled with sktime, sorted."""
    from sktime.datasets import tsc_dataset_names

    classification = set(tsc_dataset_names.univariate) | set(tsc_dataset_names.multivariate)
    return sorted(
        folder.name for folder in sktime_data_dir().iterdir()
        if folder.name in classification and (folder / f"{folder.name}_TRAIN.ts").exists()
    )


def load_ucr_split(name: str, split: str,
                   path: str | Path | None = None) -> tuple[list[np.ndarray], np.ndarray]:
    """The official train or test split of a UCR/UEA set: series and string labels.

    Each series is an array [channels, length]; lengths may differ between series.

    Args:
        name: the set's name; without ``path``, a set bundled with sktime (see
            ``bundled_ucr_names()``; other names raise ValueError).
        split: "train" or "test".
        path: folder holding ``NAME_TRAIN.ts`` and ``NAME_TEST.ts`` (directly or in ``NAME/``,
            as in the UCR/UEA archive); None: the sets bundled with sktime.
    """
    from sktime.datasets import load_from_tsfile, load_UCR_UEA_dataset

    if path is None:
        bundled = bundled_ucr_names()
        if name not in bundled:
            raise UserInputError(
                f"data.name {name!r} is not a UCR/UEA set bundled with sktime"
                f"{did_you_mean(name, bundled)}; bundled sets: {', '.join(bundled)} "
                "(for another set, give data.path, a folder with its .ts files)"
            )
        frame, labels = load_UCR_UEA_dataset(name, split=split, return_type="nested_univ")
    else:
        file_name = f"{name}_{split.upper()}.ts"
        candidates = [Path(path) / file_name, Path(path) / name / file_name]
        file = next((c for c in candidates if c.is_file()), None)
        if file is None:
            raise UserInputError(
                f"data: {file_name} is in neither {candidates[0].parent}/ nor "
                f"{candidates[1].parent}/; put the set's .ts files (UCR/UEA archive format) there"
            )
        try:
            frame, labels = load_from_tsfile(str(file), return_data_type="nested_univ")
        except Exception as err:  # sktime's parser raises anything from IOError to TypeError
            raise UserInputError(
                f"data: {file} is not a readable .ts file ({type(err).__name__}: {err}); check "
                "its @-header lines and data rows against the UCR/UEA .ts format"
            ) from None
    series = [np.stack([cell.to_numpy(dtype=np.float64) for cell in row]) for row in frame.values]
    return series, np.asarray(labels, dtype=str)


def standardise(series: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(series - mean) / std; where std is 0 the series is only centred (no NaN)."""
    return (series - mean) / np.where(std > 0, std, 1.0)


def pad_to(series: list[np.ndarray], length: int,
           pad: Literal["zeros", "last"] = "zeros") -> np.ndarray:
    """Stack series [channels, length_i] into [n, channels, length], padded at the end.

    Args:
        series: the series, each [channels, length_i] with length_i <= length.
        length: the common length.
        pad: "zeros", or "last": repeat each series' last observation.
    """
    out = np.zeros((len(series), series[0].shape[0], length))
    for i, one in enumerate(series):
        out[i, :, : one.shape[1]] = one
        if pad == "last":
            out[i, :, one.shape[1]:] = one[:, -1:]
    return out


class UCRDataModule(TensorDataModule):
    """A UCR/UEA classification set bundled with sktime, with its official train/test split.

    A validation split is carved out of the official training set (seeded; stratified where
    every class has at least two samples). Labels are encoded as the positions of the sorted
    training labels. Sets of unequal length (JapaneseVowels, PLAID) are normalised on each
    series' own length, then padded at the end to the longest series of train and test
    (or to ``length``).

    Args:
        name: the set, e.g. GunPoint, ItalyPowerDemand, BasicMotions (an unknown name lists
            the bundled ones).
        path: folder with the set's ``NAME_TRAIN.ts`` and ``NAME_TEST.ts`` files (or a
            ``NAME/`` folder holding them, as in the UCR/UEA archive), to read a set sktime
            does not bundle; None: the bundled sets.
        val_fraction: share of the official training set held out for validation.
        normalise: "series": z-normalise every series and channel on its own (the UCR
            convention); "channel": z-normalise each channel with training-split statistics
            (keeps amplitude differences between series); "none".
        pad: how a shorter series is padded: "zeros", or "last" (its last observation
            repeated: the path a neural CDE reads then stops moving, so the padding changes
            no state that is driven by the series alone).
        length: pad every series to this length (None: the longest series'), e.g. a length L
            with L - 1 a multiple of N, so that a parareal neural CDE cuts the series into N
            chunks of whole steps.
        with_index: batches are (inputs, labels, index), index [batch] the sample's position
            in the set: in the official training file, or the training file's size plus its
            position in the test file (unique over all splits, e.g. to key a per-sample
            cache).
    """

    def __init__(
        self,
        name: str = "GunPoint",
        path: str | None = None,
        batch_size: int = 16,
        seed: int = 0,
        val_fraction: float = 0.1,
        normalise: Literal["series", "channel", "none"] = "series",
        num_workers: int = 0,
        pad: Literal["zeros", "last"] = "zeros",
        length: int | None = None,
        with_index: bool = False,
    ) -> None:
        super().__init__(batch_size, seed, num_workers)
        if not 0 < val_fraction < 1:
            raise UserInputError(f"data.val_fraction must lie in (0, 1), got {val_fraction}")
        if pad not in ("zeros", "last"):
            raise UserInputError(f"data.pad must be 'zeros' or 'last', got {pad!r}")
        self.pad = pad
        self.with_index = with_index
        self.name = name
        self.path = path
        self.val_fraction = val_fraction
        self.normalise = normalise
        self.train_series, train_labels = load_ucr_split(name, "train", path)
        self.test_series, test_labels = load_ucr_split(name, "test", path)
        if not self.train_series or not self.test_series:
            empty = "train" if not self.train_series else "test"
            raise UserInputError(f"data: the {empty} split of {name!r} holds no series")
        self.encoder = LabelEncoder().fit(train_labels)
        unseen = sorted(set(test_labels) - set(self.encoder.classes_))
        if unseen:
            raise UserInputError(
                f"data.name {name!r}: test labels {unseen} never occur in training")
        self.train_labels = self.encoder.transform(train_labels)
        self.test_labels = self.encoder.transform(test_labels)
        self.classes: list[str] = [str(label) for label in self.encoder.classes_]
        self.num_classes = len(self.classes)
        longest = max(s.shape[1] for s in self.train_series + self.test_series)
        if length is not None and (not isinstance(length, int) or length < longest):
            raise UserInputError(f"data.length must be at least the longest series of {name!r} "
                             f"({longest}), got {length!r}")
        self.length = longest if length is None else length
        self.input_shape = (self.train_series[0].shape[0], self.length)

    def build_splits(self) -> dict[str, Dataset]:
        train, val = stratified_split(self.train_labels, self.val_fraction, self.seed)
        test = np.arange(len(self.test_labels))
        self.indices = {"train": train, "val": val, "test": test}
        series = {"train": self.normalised(self.train_series, train),
                  "test": self.normalised(self.test_series, train)}
        sources = {"train": ("train", train), "val": ("train", val), "test": ("test", test)}
        offset = {"train": 0, "test": len(self.train_labels)}
        labels = {"train": self.train_labels, "test": self.test_labels}
        return {
            split: tensor_dataset(series[source][rows], labels[source][rows],
                                  offset[source] + rows if self.with_index else None)
            for split, (source, rows) in sources.items()
        }

    def normalised(self, series: list[np.ndarray], train: np.ndarray) -> np.ndarray:
        """The series normalised as ``normalise`` says (statistics of the training indices)
        and padded to the common length, [n, channels, length]."""
        self.preprocessing = {"per_series": self.normalise == "series"}
        if self.normalise == "series":
            series = [
                standardise(one, one.mean(axis=1, keepdims=True), one.std(axis=1, keepdims=True))
                for one in series
            ]
        elif self.normalise == "channel":
            values = np.concatenate([self.train_series[i] for i in train], axis=1)
            mean, std = values.mean(axis=1, keepdims=True), values.std(axis=1, keepdims=True)
            series = [standardise(one, mean, std) for one in series]
            self.preprocessing.update(mean=mean.ravel().tolist(),
                                      std=np.where(std > 0, std, 1.0).ravel().tolist())
        return pad_to(series, self.length, self.pad)
