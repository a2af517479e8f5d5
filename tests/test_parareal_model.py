"""Parareal models against their torchdiffeq twins, and the iteration schedule callback."""

import dataclasses

import pytest
import pytorch_lightning as pl
import torch

import pnode_zoo
from pnode_zoo.data import DigitsDataModule
from pnode_zoo.tasks import Classifier
from pnode_zoo.training.callbacks import PararealSchedule

PAIRS = {  # plain model and options, parareal model and options on the same grid, one input
    "image": ("odenet", {"steps": 4}, "odenet_parareal", {}, (3, 1, 8, 8)),
    "series": (
        "odenet1d", {"input_shape": (2, 30), "steps": 4, "width": 8},
        "odenet1d_parareal", {"input_shape": (2, 30), "width": 8}, (3, 2, 30),
    ),
    "series_batch_norm_stem": (
        "odenet1d", {"input_shape": (2, 30), "steps": 4, "width": 8, "stem_kernel": 8,
                     "stem_batch_norm": True, "stem_layers": 2},
        "odenet1d_parareal", {"input_shape": (2, 30), "width": 8, "stem_kernel": 8,
                              "stem_batch_norm": True, "stem_layers": 2},
        (3, 2, 30),
    ),
    "trajectory": (
        "trajectory_node", {"input_shape": (3, 2), "times": [0.1 * k for k in range(6)],
                            "augment": 2, "steps": 2},
        "trajectory_node_parareal", {"input_shape": (3, 2), "times": [0.1 * k for k in range(6)],
                                     "augment": 2, "parareal": {"fine_steps": 2}},
        (4, 3, 2),
    ),
}


@pytest.mark.parametrize("kind", PAIRS)
def test_parareal_model_with_n_iterations_equals_its_torchdiffeq_twin(kind):
    plain_arch, plain_args, parareal_arch, parareal_args, input_shape = PAIRS[kind]
    torch.manual_seed(0)
    plain = pnode_zoo.create_model(plain_arch, method="rk4", **plain_args).double()
    parareal = pnode_zoo.create_model(parareal_arch, **parareal_args).double()
    parareal.block.options = {**parareal.block.options.as_dict(), "tol": 0.0}
    parareal.load_state_dict(plain.state_dict())  # same stem/encoder, field and head
    inputs = torch.randn(*input_shape, dtype=torch.float64)
    expected = plain(inputs)
    assert torch.allclose(parareal(inputs), expected, rtol=0, atol=1e-12)
    parareal.block.options = dataclasses.replace(parareal.block.options, max_iters=1)
    assert not torch.allclose(parareal(inputs), expected, rtol=0, atol=1e-9)  # K < N: inexact


def test_per_slice_parareal_odenet_has_one_field_per_slice():
    three = {"num_slices": 3}
    model = pnode_zoo.create_model("odenet_parareal", per_slice=True, parareal=three)
    shared = pnode_zoo.create_model("odenet_parareal", parareal=three)
    field_params = sum(p.numel() for p in shared.block.parameters())
    assert sum(p.numel() for p in model.block.parameters()) == 3 * field_params
    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


class RecordIters(pl.Callback):
    def __init__(self):
        self.train, self.val = [], []

    def on_train_batch_end(self, trainer, pl_module, *args):
        self.train.append(pl_module.net.block.stats.forward_iters)

    def on_validation_batch_end(self, trainer, pl_module, *args):
        self.val.append(pl_module.net.block.stats.forward_iters)


def test_schedule_raises_iterations_over_epochs(tmp_path):
    pl.seed_everything(0)
    model = Classifier(arch="odenet_parareal", arch_args={"width": 8, "parareal": {"tol": 0.0}})
    record = RecordIters()
    trainer = pl.Trainer(
        max_epochs=3, limit_train_batches=2, limit_val_batches=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
        default_root_dir=tmp_path,
        callbacks=[PararealSchedule({0: 1, 2: 3}, eval_max_iters=4), record],
    )
    trainer.fit(model, DigitsDataModule(batch_size=8))
    assert record.train == [1, 1, 1, 1, 3, 3]
    assert set(record.val) == {4}


def test_schedule_rejects_bad_milestones():
    with pytest.raises(ValueError, match="milestone at epoch 0"):
        PararealSchedule({3: 2})
    with pytest.raises(ValueError, match=">= 0"):
        PararealSchedule({0: -1})


def test_irregular_forecaster_with_equal_gaps_is_the_regular_one_and_its_parareal_twin():
    shape, times = (3, 2), [0.25 * k for k in range(6)]
    torch.manual_seed(0)
    regular = pnode_zoo.create_model("trajectory_node", input_shape=shape, times=times,
                                     steps=2).double()
    irregular = pnode_zoo.create_model("trajectory_node", input_shape=shape, times=times,
                                       steps=2, irregular=True).double()
    twin = pnode_zoo.create_model("trajectory_node_parareal", input_shape=shape, times=times,
                                  irregular=True, parareal={"fine_steps": 2, "tol": 0.0}).double()
    for model in (irregular, twin):  # the same MLP, inside the irregular time field
        model.block.func.func.load_state_dict(regular.block.func.state_dict())
    history = torch.randn(4, *shape, dtype=torch.float64)
    equal = torch.full((4, 2 + 5), 0.25, dtype=torch.float64)
    torch.testing.assert_close(irregular(history, equal), regular(history), rtol=0, atol=1e-12)
    uneven = torch.empty(4, 7, dtype=torch.float64).uniform_(0.1, 0.5)
    torch.testing.assert_close(twin(history, uneven), irregular(history, uneven), rtol=0,
                               atol=1e-12)
    with pytest.raises(ValueError, match="gaps"):
        irregular(history)


def test_gru_baseline_with_equal_gaps_is_the_regular_one():
    shape, times = (1, 2), [0.5 * k for k in range(5)]
    torch.manual_seed(0)
    regular = pnode_zoo.create_model("trajectory_gru", input_shape=shape, times=times)
    irregular = pnode_zoo.create_model("trajectory_gru", input_shape=shape, times=times,
                                       irregular=True)
    irregular.load_state_dict(regular.state_dict())
    history = torch.randn(3, *shape)
    forecast = irregular(history, torch.full((3, 4), 0.5))
    torch.testing.assert_close(forecast, regular(history), rtol=0, atol=0)
    assert not torch.allclose(irregular(history, torch.full((3, 4), 0.25)), forecast)
