"""Bad data is refused before training, in one sentence: NaN inputs, wrong shapes, empty splits,
truncated or corrupt IDX files, unreadable .ts files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

from pnode_zoo.data import MNISTDataModule, TensorDataModule, UCRDataModule
from pnode_zoo.data.images import read_idx
from pnode_zoo.errors import UserInputError


class Splits(TensorDataModule):
    """A data module whose splits are given tensors."""

    input_shape = (1, 4)
    num_classes = 2

    def __init__(self, **splits: torch.Tensor) -> None:
        super().__init__(batch_size=2)
        self.given = splits

    def build_splits(self):
        return {name: TensorDataset(x, torch.zeros(len(x), dtype=torch.long))
                for name, x in self.given.items()}


def _good(n: int = 4) -> torch.Tensor:
    return torch.randn(n, 1, 4)


@pytest.mark.parametrize(
    ("splits", "message"),
    [
        ({"train": _good().index_put((torch.tensor([1, 3]),), torch.tensor(float("nan"))),
          "val": _good(), "test": _good()},
         "2 train samples contain NaN or Inf values (the first is sample 1)"),
        ({"train": _good(), "val": _good(), "test": _good().clamp(max=float("inf")) / 0},
         "test samples contain NaN or Inf"),
        ({"train": _good(), "val": _good(0), "test": _good()}, "the val split is empty"),
        ({"train": torch.randn(4, 3, 4), "val": _good(), "test": _good()},
         "train samples have shape (3, 4), but the data module declares input_shape (1, 4)"),
    ],
    ids=["nan", "inf", "empty", "channels"],
)
def test_bad_splits_are_refused_at_setup(splits, message) -> None:
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Splits(**splits).setup("fit")


def _idx(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 8, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def _write_mnist(folder: Path, images: int = 40) -> None:
    rng = np.random.default_rng(0)
    raw = folder / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, n in (("train", images), ("t10k", images // 2)):
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(_idx(rng.integers(0, 256, (n, 28, 28))))
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(_idx(np.arange(n) % 10))


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-7]), "holds 31369 bytes but its header"),
        (lambda p: p.write_bytes(b"PK\3\4 not idx"), "is not an IDX file of unsigned bytes"),
        (lambda p: p.write_bytes(b"\0\0\x08\x03\0"), "is truncated (its header is cut)"),
    ],
    ids=["truncated", "not_idx", "header_cut"],
)
def test_damaged_idx_files_are_named(tmp_path: Path, damage, message) -> None:
    _write_mnist(tmp_path)
    path = tmp_path / "MNIST" / "raw" / "train-images-idx3-ubyte"
    damage(path)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        MNISTDataModule(root=str(tmp_path), val_size=10).setup("fit")


def test_a_broken_gzip_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x-idx1-ubyte.gz"
    path.write_bytes(gzip.compress(_idx(np.arange(10)))[:-5])
    with pytest.raises(ValueError, match="cannot be read"):
        read_idx(path)


def test_image_and_label_counts_must_agree(tmp_path: Path) -> None:
    _write_mnist(tmp_path)
    labels = tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte"
    labels.write_bytes(_idx(np.arange(30) % 10))
    with pytest.raises(ValueError, match=r"images \(40, 28, 28\) and labels \(30,\) do not match"):
        MNISTDataModule(root=str(tmp_path), val_size=10).setup("fit")


TS_HEADER = ("@problemName Toy\n@timeStamps false\n@missing true\n@univariate true\n"
             "@equalLength true\n@seriesLength 6\n@classLabel true a b\n@data\n")


def _write_ts(folder: Path, train_rows: list[str] | None = None) -> None:
    rng = np.random.default_rng(0)
    rows = [",".join(f"{v:.3f}" for v in rng.normal(size=6)) + f":{'ab'[k % 2]}"
            for k in range(12)]
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "Toy_TRAIN.ts").write_text(TS_HEADER + "\n".join(train_rows or rows) + "\n")
    (folder / "Toy_TEST.ts").write_text(TS_HEADER + "\n".join(rows[:6]) + "\n")


def test_a_ts_folder_is_read(tmp_path: Path) -> None:
    _write_ts(tmp_path / "Toy")  # the UCR/UEA archive layout: PATH/NAME/NAME_TRAIN.ts
    data = UCRDataModule("Toy", path=str(tmp_path), val_fraction=0.25)
    data.setup("fit")
    assert data.input_shape == (1, 6) and data.classes == ["a", "b"]
    assert {split: len(d) for split, d in data.splits.items()} == {"train": 9, "val": 3,
                                                                   "test": 6}


@pytest.mark.parametrize(
    ("rows", "error", "message"),
    [
        (["1,2,3,?,5,6:a", "1,2,3,4,5,6:b"] * 3, ValueError, "train samples contain NaN"),
        (["not,a,number,at,all,here:a"] * 4, ValueError, "Toy_TRAIN.ts is not a readable .ts"),
        (None, UserInputError, "Toy_TEST.ts is in neither"),
    ],
    ids=["missing_values", "garbage", "missing_file"],
)
def test_bad_ts_files_are_named(tmp_path: Path, rows, error, message) -> None:
    _write_ts(tmp_path, rows)
    if rows is None:
        (tmp_path / "Toy_TEST.ts").unlink()
    with pytest.raises(error, match=message):
        UCRDataModule("Toy", path=str(tmp_path), val_fraction=0.25).setup("fit")


@pytest.mark.parametrize("case", ["truncated_idx", "nan_series"])
def test_the_cli_refuses_bad_data_before_the_run(cli_here, tmp_path: Path, case: str) -> None:
    if case == "truncated_idx":
        _write_mnist(tmp_path / "data")
        path = tmp_path / "data" / "MNIST" / "raw" / "t10k-labels-idx1-ubyte"
        path.write_bytes(path.read_bytes()[:-3])
        args = ["--data=MNISTDataModule", "--data.root=data", "--data.val_size=10"]
        message = "t10k-labels-idx1-ubyte holds"
    else:
        _write_ts(tmp_path / "data", ["1,2,3,?,5,6:a", "1,2,3,4,5,6:b"] * 3)
        args = ["--data=UCRDataModule", "--data.name=Toy", "--data.path=data",
                "--model.arch=odenet1d"]
        message = "train samples contain NaN"
    result = cli_here(["fit", "--trainer.logger=false", *args])
    assert result.returncode == 2, result.stderr[-2000:]
    assert result.stderr.strip().splitlines()[-1].startswith("error: data: ")
    assert message in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()
