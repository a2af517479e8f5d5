"""MNIST, Fashion-MNIST and CIFAR-10 from files under the data root, in torchvision's layout.

The images are read once into memory as uint8 tensors; each sample is scaled, normalised
with the training split's per-channel statistics and (optionally, training split only)
augmented on the fly. torchvision downloads the files only when ``download=True``.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import datasets
from torchvision.transforms import v2

from pnode_zoo.data.base import TensorDataModule, stratified_split
from pnode_zoo.errors import UserInputError

__all__ = [
    "CIFAR10DataModule",
    "FASHION_MNIST_SYSTEM_DIR",
    "FashionMNISTDataModule",
    "ImageDataModule",
    "ImageTensorDataset",
    "MNISTDataModule",
    "channel_statistics",
    "read_idx",
]

FASHION_MNIST_SYSTEM_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian's package


class ImageTensorDataset(Dataset):
    """uint8 images in memory, returned scaled to [0, 1], normalised and maybe augmented.

    Args:
        images: uint8 tensor [N, C, H, W].
        labels: int64 tensor [N].
        mean: per-channel mean of the scaled images (training statistics).
        std: per-channel standard deviation of the scaled images.
        augment: transform applied to each normalised sample (None: none).
    """

    def __init__(
        self,
        images: torch.Tensor,
        labels: torch.Tensor,
        mean: torch.Tensor,
        std: torch.Tensor,
        augment: v2.Transform | None = None,
    ) -> None:
        self.images, self.labels = images, labels
        self.mean, self.std = mean.view(-1, 1, 1), std.view(-1, 1, 1)
        self.augment = augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = (self.images[index].float() / 255 - self.mean) / self.std
        if self.augment is not None:
            image = self.augment(image)
        return image, self.labels[index]


def channel_statistics(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact per-channel mean and standard deviation of uint8 images [N, C, H, W] in [0, 1].

    Computed from a 256-bin histogram per channel, so no float copy of the images is made.
    """
    values = torch.arange(256, dtype=torch.float64) / 255
    means, stds = [], []
    for channel in range(images.shape[1]):
        counts = torch.bincount(images[:, channel].flatten(), minlength=256).double()
        mean = (counts * values).sum() / counts.sum()
        means.append(mean)
        stds.append(((counts * (values - mean) ** 2).sum() / counts.sum()).sqrt())
    return torch.stack(means).float(), torch.stack(stds).float()


def read_idx(path: Path) -> np.ndarray:
    """An IDX file of unsigned bytes (MNIST's format), plain or gzipped, as an array.

    A file that is not IDX, is truncated, or is a broken gzip archive raises ValueError
    naming the file.
    """
    try:
        data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise UserInputError(f"data: {path} cannot be read ({err}); replace the file") from None
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08:
        raise UserInputError(f"data: {path} is not an IDX file of unsigned bytes; replace the file")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise UserInputError(f"data: {path} is truncated (its header is cut); replace the file")
    shape = np.frombuffer(data, dtype=">u4", count=ndim, offset=4).astype(int)
    expected = 4 + 4 * ndim + int(np.prod(shape))
    if len(data) != expected:
        raise UserInputError(
            f"data: {path} holds {len(data)} bytes but its header {tuple(shape)} needs "
            f"{expected} (truncated or corrupt); replace the file"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


class ImageDataModule(TensorDataModule):
    """Shared logic of the torchvision image sets: file checks, splits, statistics, loaders.

    Subclasses name the torchvision dataset class, the image shape, the folder the files live
    in and how to read them.

    Args:
        root: data root; the files go where torchvision puts them (see ``datasets/README.md``).
        download: let torchvision download missing files (needs the internet).
        val_size: training images held out (stratified) for validation.
        augment: random crops (and, where the set allows, flips) of the training images.
    """

    num_classes = 10
    torchvision_class: type[datasets.VisionDataset]
    title: str
    crop_padding: int = 2  # pixels of padding before the random crop
    flip: bool = False  # random horizontal flips are label-preserving (not for digits)
    search_dirs: tuple[Path, ...] = ()  # read-only folders tried after the data root's

    def __init__(
        self,
        root: str = "datasets",
        download: bool = False,
        batch_size: int = 128,
        seed: int = 0,
        val_size: int = 5000,
        augment: bool = False,
        num_workers: int = 0,
    ) -> None:
        super().__init__(batch_size, seed, num_workers)
        if val_size < self.num_classes:
            raise UserInputError(
                f"data.val_size must be at least {self.num_classes}, got {val_size}")
        self.root = Path(root)
        self.download = download
        self.val_size = val_size
        self.augment = augment
        if not download:
            self.files()

    def folder(self) -> Path:
        """Where torchvision keeps (and downloads) the files under the data root."""
        raise NotImplementedError

    def file_names(self) -> list[str]:
        """The files the data set needs, as torchvision names them."""
        raise NotImplementedError

    def read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images [N, C, H, W] and int64 labels [N] of the official train or test split."""
        raise NotImplementedError

    def find_files(self) -> dict[str, Path] | None:
        """Path of every needed file (plain or gzipped) from the first folder holding all."""
        for folder in (self.folder(), *self.search_dirs):
            found = {}
            for name in self.file_names():
                candidates = [folder / name, folder / f"{name}.gz"]
                found[name] = next((path for path in candidates if path.exists()), None)
            if all(found.values()):
                return found
        return None

    def files(self) -> dict[str, Path]:
        """``find_files()``, or FileNotFoundError saying what to put where."""
        found = self.find_files()
        if found is None:
            searched = ", ".join(f"{folder}/" for folder in (self.folder(), *self.search_dirs))
            raise UserInputError(
                f"{self.title} is not in {searched}: put {', '.join(self.file_names())} "
                f"into {self.folder()}/ (or pass --data.download true to fetch them when online)"
            )
        return found

    def augmentation(self) -> v2.Transform:
        """The random training transform: a padded random crop, then maybe a flip."""
        crop = v2.RandomCrop(self.input_shape[1:], padding=self.crop_padding)
        return v2.Compose([crop, v2.RandomHorizontalFlip()]) if self.flip else crop

    def prepare_data(self) -> None:
        if self.download and self.find_files() is None:
            for train in (True, False):
                self.torchvision_class(str(self.root), train=train, download=True)

    def build_splits(self) -> dict[str, Dataset]:
        images, labels = self.read(train=True)
        test_images, test_labels = self.read(train=False)
        if self.val_size >= len(labels):
            raise UserInputError(
                f"data.val_size={self.val_size} leaves no training image of {len(labels)}; "
                "give a smaller val_size"
            )
        train, val = stratified_split(labels.numpy(), self.val_size, self.seed)
        self.indices = {"train": train, "val": val, "test": np.arange(len(test_labels))}
        mean, std = channel_statistics(images[train])
        self.preprocessing = {"scale": 1 / 255, "mean": mean.tolist(), "std": std.tolist()}
        augment = self.augmentation() if self.augment else None
        return {
            "train": ImageTensorDataset(images[train], labels[train], mean, std, augment),
            "val": ImageTensorDataset(images[val], labels[val], mean, std),
            "test": ImageTensorDataset(test_images, test_labels, mean, std),
        }


class MNISTDataModule(ImageDataModule):
    """MNIST handwritten digits: 28x28 grey-scale images in 10 classes.

    60000 training images (``val_size`` of them held out for validation) and 10000 test
    images. Files: ``ROOT/MNIST/raw/*-ubyte`` (or ``.gz``).

    Args:
        augment: random crops (2-pixel padding) of the training images.
    """

    input_shape = (1, 28, 28)
    torchvision_class = datasets.MNIST
    title = "MNIST"

    def folder(self) -> Path:
        return self.root / self.torchvision_class.__name__ / "raw"

    def file_names(self) -> list[str]:
        return [name.removesuffix(".gz") for name, _ in self.torchvision_class.resources]

    def read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        files = self.files()
        prefix = "train" if train else "t10k"
        images = read_idx(files[f"{prefix}-images-idx3-ubyte"])
        labels = read_idx(files[f"{prefix}-labels-idx1-ubyte"]).astype(np.int64)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise UserInputError(
                f"data: {prefix} images {images.shape} and labels {labels.shape} do not match "
                "(need [N, H, W] images and N labels); check the files"
            )
        if labels.size and not 0 <= labels.min() <= labels.max() < self.num_classes:
            raise UserInputError(f"data: {prefix} labels lie outside 0..{self.num_classes - 1}")
        return torch.from_numpy(images.copy()).unsqueeze(1), torch.from_numpy(labels)


class FashionMNISTDataModule(MNISTDataModule):
    """Fashion-MNIST (Zalando): 28x28 grey-scale images of clothes in 10 classes.

    60000 training images (``val_size`` of them held out for validation) and 10000 test
    images. Files: ``ROOT/FashionMNIST/raw/*-ubyte`` (or ``.gz``), else Debian's
    ``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``).

    Args:
        augment: random crops (2-pixel padding) and horizontal flips of the training images.
    """

    torchvision_class = datasets.FashionMNIST
    title = "Fashion-MNIST"
    flip = True
    search_dirs = (FASHION_MNIST_SYSTEM_DIR,)


class CIFAR10DataModule(ImageDataModule):
    """CIFAR-10: 32x32 colour images in 10 classes.

    50000 training images (``val_size`` of them held out for validation) and 10000 test
    images. Files: ``ROOT/cifar-10-batches-py/`` (the extracted python archive).

    Args:
        augment: random crops (4-pixel padding) and horizontal flips of the training images.
    """

    input_shape = (3, 32, 32)
    torchvision_class = datasets.CIFAR10
    title = "CIFAR-10"
    crop_padding = 4
    flip = True

    def folder(self) -> Path:
        return self.root / datasets.CIFAR10.base_folder

    def file_names(self) -> list[str]:
        batches = datasets.CIFAR10.train_list + datasets.CIFAR10.test_list
        return [name for name, _ in batches] + [datasets.CIFAR10.meta["filename"]]

    def read(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        self.files()
        data = datasets.CIFAR10(str(self.root), train=train)
        images = torch.from_numpy(data.data).permute(0, 3, 1, 2).contiguous()
        return images, torch.tensor(data.targets, dtype=torch.long)
