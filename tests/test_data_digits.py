import numpy as np
import pytest
import torch

from pnode_zoo.data import DigitsDataModule


def setup_module_data(**kwargs) -> DigitsDataModule:
    data = DigitsDataModule(**kwargs)
    data.setup("fit")
    return data


def test_split_sizes_cover_all_samples_without_overlap():
    data = setup_module_data()
    sizes = {split: len(data.splits[split]) for split in ("train", "val", "test")}
    assert sizes == {"train": 1257, "val": 180, "test": 360}
    everything = np.concatenate([data.indices[s] for s in ("train", "val", "test")])
    assert len(np.unique(everything)) == 1797


def test_split_is_stratified():
    data = setup_module_data()
    counts = torch.bincount(data.splits["test"].tensors[1], minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # 20 % of ~180 per class


def test_split_and_loaders_are_deterministic_and_depend_on_seed():
    first, second = setup_module_data(seed=3), setup_module_data(seed=3)
    other = setup_module_data(seed=4)
    for split in ("train", "val", "test"):
        assert np.array_equal(first.indices[split], second.indices[split])
    assert not np.array_equal(first.indices["test"], other.indices["test"])
    batch_a, batch_b = next(iter(first.train_dataloader())), next(iter(second.train_dataloader()))
    assert torch.equal(batch_a[0], batch_b[0]) and torch.equal(batch_a[1], batch_b[1])


def test_inputs_are_standardised_on_train_statistics():
    data = setup_module_data()
    train_images = data.splits["train"].tensors[0]
    assert train_images.shape[1:] == (1, 8, 8)
    assert abs(train_images.mean().item()) < 1e-5
    assert abs(train_images.std().item() - 1) < 1e-3


@pytest.mark.parametrize("kwargs", [{"batch_size": 0}, {"test_fraction": 0.0},
                                    {"test_fraction": 0.6, "val_fraction": 0.5}])
def test_bad_arguments_name_the_option(kwargs):
    with pytest.raises(ValueError, match="data\\."):
        DigitsDataModule(**kwargs)
