"""UCR/UEA data modules on the sets bundled with sktime (offline)."""

import numpy as np
import pytest
import torch

from pnode_zoo.data import UCRDataModule
from pnode_zoo.data.base import stratified_split
from pnode_zoo.data.ucr import bundled_ucr_names

OFFICIAL = {  # name: (train, test, channels, length, classes)
    "GunPoint": (50, 150, 1, 150, 2),
    "ItalyPowerDemand": (67, 1029, 1, 24, 2),
    "BasicMotions": (40, 40, 6, 100, 4),
}


def ready(name: str = "GunPoint", **kwargs) -> UCRDataModule:
    data = UCRDataModule(name, **kwargs)
    data.setup("fit")
    return data


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_split_sizes_are_the_official_ones_without_overlap(name):
    n_train, n_test, channels, length, classes = OFFICIAL[name]
    data = ready(name)
    assert data.input_shape == (channels, length) and data.num_classes == classes
    sizes = {split: len(data.splits[split]) for split in ("train", "val", "test")}
    assert sizes["train"] + sizes["val"] == n_train and sizes["test"] == n_test
    assert sizes["val"] == pytest.approx(0.1 * n_train, abs=1)
    assert not set(data.indices["train"]) & set(data.indices["val"])
    assert data.splits["train"].tensors[0].shape[1:] == (channels, length)


def test_validation_split_is_stratified_seeded_and_deterministic():
    first, second = ready(seed=1, val_fraction=0.2), ready(seed=1, val_fraction=0.2)
    other = ready(seed=2, val_fraction=0.2)
    assert np.array_equal(first.indices["val"], second.indices["val"])
    assert not np.array_equal(first.indices["val"], other.indices["val"])
    counts = torch.bincount(first.splits["val"].tensors[1], minlength=2)
    assert counts.tolist() == [5, 5]
    batch_a, batch_b = next(iter(first.train_dataloader())), next(iter(second.train_dataloader()))
    assert torch.equal(batch_a[0], batch_b[0]) and torch.equal(batch_a[1], batch_b[1])


def test_test_split_is_the_official_test_file_unchanged_in_order():
    from sktime.datasets import load_UCR_UEA_dataset

    raw, labels = load_UCR_UEA_dataset("ItalyPowerDemand", split="test", return_type="numpy3D")
    data = ready("ItalyPowerDemand", normalise="none")
    assert np.allclose(data.splits["test"].tensors[0].numpy(), raw, atol=1e-6)
    assert data.splits["test"].tensors[1].tolist() == [int(v) - 1 for v in labels]


@pytest.mark.parametrize("name", ["GunPoint", "BasicMotions"])
def test_series_normalisation_is_per_series_and_channel(name):
    inputs = ready(name).splits["test"].tensors[0]
    assert torch.allclose(inputs.mean(dim=-1), torch.zeros(()), atol=1e-4)
    assert torch.allclose(inputs.std(dim=-1, unbiased=False), torch.ones(()), atol=1e-3)


def test_channel_normalisation_uses_training_statistics_only():
    data = ready("BasicMotions", normalise="channel")
    train = data.splits["train"].tensors[0]
    assert torch.allclose(train.mean(dim=(0, 2)), torch.zeros(6), atol=1e-4)
    assert torch.allclose(train.std(dim=(0, 2), unbiased=False), torch.ones(6), atol=1e-3)
    assert not torch.allclose(data.splits["test"].tensors[0].mean(dim=(0, 2)), torch.zeros(6),
                              atol=1e-3)


def test_string_labels_are_encoded_by_sorted_training_labels():
    data = ready("BasicMotions")
    assert data.classes == ["badminton", "running", "standing", "walking"]
    assert torch.bincount(data.splits["test"].tensors[1]).tolist() == [10, 10, 10, 10]


def test_unequal_lengths_are_padded_to_the_longest_series():
    data = ready("JapaneseVowels")
    assert data.input_shape == (12, 29)
    inputs = data.splits["test"].tensors[0]
    padded = (inputs[:, :, -1] == 0).all(dim=1)
    assert padded.any() and not padded.all()  # shorter series end in zeros, the longest not


def test_unknown_name_lists_the_bundled_sets_and_never_downloads(monkeypatch):
    import sktime.datasets

    def no_download(*args, **kwargs):
        raise AssertionError("sktime's loader was called for an unknown name")

    monkeypatch.setattr(sktime.datasets, "load_UCR_UEA_dataset", no_download)
    with pytest.raises(ValueError, match="data.name 'Coffee' is not a UCR/UEA set") as err:
        UCRDataModule("Coffee")
    assert "GunPoint, ItalyPowerDemand" in str(err.value)
    assert {"BasicMotions", "GunPoint", "ItalyPowerDemand"} <= set(bundled_ucr_names())
    assert not {"Covid3Month", "Tecator"} & set(bundled_ucr_names())  # regression sets


@pytest.mark.parametrize("kwargs", [{"val_fraction": 0.0}, {"val_fraction": 1.0},
                                    {"batch_size": 0}])
def test_bad_arguments_name_the_option(kwargs):
    with pytest.raises(ValueError, match="data\\."):
        UCRDataModule("GunPoint", **kwargs)


def test_split_falls_back_to_unstratified_where_stratification_is_impossible():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2])  # class 2 has a single sample
    kept, held_out = stratified_split(labels, 2, seed=0)
    assert len(held_out) == 2 and sorted(np.concatenate([kept, held_out])) == list(range(8))
    kept, held_out = stratified_split(np.repeat([0, 1, 2, 3], 5), 4, seed=0)
    assert sorted(np.repeat([0, 1, 2, 3], 5)[held_out]) == [0, 1, 2, 3]  # stratified
