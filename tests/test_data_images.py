"""Image data modules: Fashion-MNIST from Debian's files, and the offline error without files."""

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from clitools import FASHION_MNIST_ABSENT

from pnode_zoo.data import CIFAR10DataModule, FashionMNISTDataModule, MNISTDataModule
from pnode_zoo.data.images import FASHION_MNIST_SYSTEM_DIR, channel_statistics, read_idx
from pnode_zoo.errors import UserInputError

needs_fashion_mnist = pytest.mark.skipif(
    not FASHION_MNIST_SYSTEM_DIR.is_dir(),
    reason=FASHION_MNIST_ABSENT,
)


@pytest.fixture(scope="module")
def fashion(tmp_path_factory) -> FashionMNISTDataModule:
    data = FashionMNISTDataModule(root=str(tmp_path_factory.mktemp("empty_root")))
    data.setup("fit")
    return data


@needs_fashion_mnist
def test_fashion_mnist_has_the_official_split_sizes_without_overlap(fashion):
    sizes = {split: len(fashion.splits[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": 55000, "val": 5000, "test": 10000}
    assert not set(fashion.indices["train"]) & set(fashion.indices["val"])
    assert len(np.union1d(fashion.indices["train"], fashion.indices["val"])) == 60000
    assert torch.bincount(fashion.splits["val"].labels).tolist() == [500] * 10


@needs_fashion_mnist
def test_fashion_mnist_is_normalised_with_training_statistics(fashion):
    train = fashion.splits["train"]
    images = torch.stack([train[i][0] for i in range(0, 55000, 11)])
    assert images.shape[1:] == (1, 28, 28)
    assert abs(images.mean().item()) < 0.02 and abs(images.std().item() - 1) < 0.02
    assert fashion.splits["test"].mean.item() == pytest.approx(train.mean.item())


@needs_fashion_mnist
def test_fashion_mnist_split_and_augmentation_are_deterministic(tmp_path):
    def first_batch(seed: int) -> tuple[np.ndarray, torch.Tensor]:
        data = FashionMNISTDataModule(root=str(tmp_path), seed=seed, augment=True, batch_size=8)
        data.setup("fit")
        torch.manual_seed(0)  # the augmentation draws from torch's global generator
        return data.indices["val"], next(iter(data.train_dataloader()))[0]

    (val_a, batch_a), (val_b, batch_b), (val_c, _) = first_batch(0), first_batch(0), first_batch(1)
    assert np.array_equal(val_a, val_b) and torch.equal(batch_a, batch_b)
    assert not np.array_equal(val_a, val_c)


def test_files_in_the_data_root_are_found_plain_or_gzipped(tmp_path):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = np.arange(n, dtype=np.uint8) % 10
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte.gz", labels, gzipped=True)
    data = MNISTDataModule(root=str(tmp_path), val_size=10)
    data.setup("fit")
    assert {s: len(d) for s, d in data.splits.items()} == {"train": 50, "val": 10, "test": 20}
    assert np.array_equal(read_idx(raw / "t10k-images-idx3-ubyte"), images)
    assert data.splits["test"].labels.tolist() == (np.arange(20) % 10).tolist()


def write_idx(path: Path, array: np.ndarray, gzipped: bool = False) -> None:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    data = header + array.tobytes()
    path.write_bytes(gzip.compress(data) if gzipped else data)


@pytest.mark.parametrize(
    ("module", "where", "first_file"),
    [(MNISTDataModule, "MNIST/raw/", "train-images-idx3-ubyte"),
     (CIFAR10DataModule, "cifar-10-batches-py/", "data_batch_1")],
)
def test_offline_without_files_says_what_to_put_where(tmp_path, module, where, first_file):
    with pytest.raises(UserInputError) as err:
        module(root=str(tmp_path))
    message = str(err.value)
    assert first_file in message and f"{tmp_path}/{where}" in message
    assert "--data.download true" in message and "\n" not in message
    assert not any(tmp_path.iterdir())  # nothing downloaded or created


def test_channel_statistics_are_exact():
    images = torch.randint(0, 256, (7, 3, 5, 5), dtype=torch.uint8)
    mean, std = channel_statistics(images)
    scaled = images.double() / 255
    assert torch.allclose(mean.double(), scaled.mean(dim=(0, 2, 3)), atol=1e-6)
    assert torch.allclose(std.double(), scaled.std(dim=(0, 2, 3), unbiased=False), atol=1e-6)


def test_bad_arguments_name_the_option(tmp_path):
    with pytest.raises(ValueError, match="data.val_size"):
        MNISTDataModule(root=str(tmp_path), val_size=0)
