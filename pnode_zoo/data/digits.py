"""scikit-learn's 8x8 handwritten digits: the embedded data set (ships with scikit-learn)."""

from __future__ import annotations

from sklearn.datasets import load_digits
from torch.utils.data import Dataset

from pnode_zoo.data.base import TensorDataModule, stratified_split, tensor_dataset
from pnode_zoo.errors import UserInputError

__all__ = ["DigitsDataModule"]


class DigitsDataModule(TensorDataModule):
    """1797 8x8 grey-scale digits, split train/val/test by a fixed seeded stratified split.

    Pixels (0..16) are standardised with the training split's mean and standard deviation.

    Args:
        test_fraction: share of all samples in the test split.
        val_fraction: share of all samples in the validation split.
    """

    num_classes = 10
    input_shape = (1, 8, 8)

    def __init__(
        self,
        batch_size: int = 64,
        seed: int = 0,
        test_fraction: float = 0.2,
        val_fraction: float = 0.1,
    ) -> None:
        super().__init__(batch_size, seed)
        fractions_ok = 0 < test_fraction < 1 and 0 < val_fraction < 1
        if not (fractions_ok and test_fraction + val_fraction < 1):
            raise UserInputError(
                "data.test_fraction and data.val_fraction must lie in (0, 1) and sum below 1, "
                f"got {test_fraction} and {val_fraction}"
            )
        self.test_fraction = test_fraction
        self.val_fraction = val_fraction

    def build_splits(self) -> dict[str, Dataset]:
        images, labels = load_digits(return_X_y=True)
        images = images.reshape(-1, *self.input_shape).astype("float32")
        rest, test = stratified_split(labels, self.test_fraction, self.seed)
        val_share = self.val_fraction / (1 - self.test_fraction)
        train_in_rest, val_in_rest = stratified_split(labels[rest], val_share, self.seed)
        train, val = rest[train_in_rest], rest[val_in_rest]
        self.indices = {"train": train, "val": val, "test": test}
        mean, std = images[train].mean(), images[train].std()
        self.preprocessing = {"mean": [float(mean)], "std": [float(std)]}
        images = (images - mean) / std
        return {
            "train": tensor_dataset(images[train], labels[train]),
            "val": tensor_dataset(images[val], labels[val]),
            "test": tensor_dataset(images[test], labels[test]),
        }
