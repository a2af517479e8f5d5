"""The hub's path for the neural CDEs: a warm-started parareal twin fitted briefly, exported,
loaded by its card, evaluated with and without sample indices; its card says how it solves."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from clitools import run_cli
from safetensors.torch import load_file

import pnode_zoo
from pnode_zoo.data import UCRDataModule
from pnode_zoo.data.ucr import load_ucr_split
from pnode_zoo.hub import create_transform, store
from pnode_zoo.hub.card import WEIGHTS_FILE, file_sha256
from pnode_zoo.hub.export import evaluate, export_checkpoint, reproduces
from pnode_zoo.hub.solver import describe_solver
from pnode_zoo.tasks import Classifier

LENGTH, CHUNKS = 25, 4  # ItalyPowerDemand (24 observations) padded: 24 = 4 chunks x 6 steps
PARAREAL = {"num_slices": CHUNKS, "coarse": "rk4", "tol": 1e-3, "warm_start": True,
            "backward": "unrolled", "recompute": False}
CONFIG = {
    "seed_everything": 0,
    "model": {"class_path": "Classifier", "init_args": {
        "arch": "ncde_parareal", "lr": 0.003,
        "arch_args": {"hidden": 4, "width": 8, "input_scale": 0.3, "readout": "boundaries",
                      "parareal": PARAREAL}}},
    "data": {"class_path": "UCRDataModule", "init_args": {
        "name": "ItalyPowerDemand", "batch_size": 16, "with_index": True, "pad": "last",
        "length": LENGTH}},
    "trainer": {"max_epochs": 1, "limit_train_batches": 2, "limit_val_batches": 1,
                "limit_test_batches": 1, "logger": False},
}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of a tiny warm-started ncde_parareal, fitted for two batches by `fit`."""
    folder = tmp_path_factory.mktemp("fit")
    (folder / "ncde.yaml").write_text(yaml.safe_dump(CONFIG))
    result = run_cli(["fit", "--config", "ncde.yaml"], folder)
    assert result.returncode == 0, result.stderr
    return next(folder.glob("runs/*/*/checkpoints/best-*.ckpt"))


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("export") / "ncde_parareal.italy_power_demand"
    export_checkpoint(checkpoint, directory)
    return directory


def _test_batch(with_index: bool) -> list[torch.Tensor]:
    data = UCRDataModule(**{**CONFIG["data"]["init_args"], "with_index": with_index})
    data.setup("test")
    return next(iter(data.test_dataloader()))


def test_the_card_says_how_the_network_solves(exported: Path) -> None:
    card = store.read_card(exported)
    assert card.arch == "ncde_parareal" and card.dataset == "italy_power_demand"
    solver = card.solver
    assert solver["interpolation"] == "hermite"
    assert solver["path"] == "torchcde.hermite_cubic_coefficients_with_backward_differences"
    assert (solver["observations"], solver["steps_per_observation"], solver["steps"]) == (
        LENGTH, 1, LENGTH - 1)
    assert (solver["readout"], solver["readout_states"]) == ("boundaries", CHUNKS + 1)
    parareal = solver["parareal"]
    assert (parareal["chunks"], parareal["observations_per_chunk"]) == (CHUNKS, 6)
    assert (parareal["coarse"], parareal["coarse_field"]) == ("rk4", "increment")
    assert parareal["tol"] == PARAREAL["tol"] and parareal["max_iters"] == CHUNKS
    assert parareal["warm_start"] is True and parareal["fine_steps_per_chunk"] == 6
    assert "Hermite cubic with backward differences" in solver["summary"]
    assert "parareal over 4 chunks" in solver["summary"]
    # the plain twin's card: cdeint, no parareal entry; other networks: none at all
    plain = pnode_zoo.create_model("ncde", num_classes=2, input_shape=(1, LENGTH),
                                   interpolation="linear", steps_per_observation=3)
    described = describe_solver(plain, (1, LENGTH))
    assert described["solver"] == "torchcde.cdeint" and "parareal" not in described
    assert (described["path"], described["steps"]) == ("torchcde.linear_interpolation_coeffs",
                                                       3 * (LENGTH - 1))
    assert describe_solver(pnode_zoo.create_model("resnet1d"), (1, LENGTH)) is None


def test_loaded_by_its_card_it_computes_what_the_checkpoint_computes(checkpoint: Path,
                                                                      exported: Path) -> None:
    reference = Classifier.load_from_checkpoint(checkpoint, map_location="cpu",
                                                weights_only=True).eval()
    model, card = pnode_zoo.from_pretrained(exported)
    x, _, index = _test_batch(with_index=True)
    with torch.no_grad():
        expected = reference(x)  # no index: the coarse sweep's start
        assert torch.equal(model(x, index=index), expected)  # all misses: the coarse sweep
        warm = model(x, index=index)  # all hits: another start, the same output within tol
        assert model.block.stats.cache_hit_rate == 1.0
        torch.testing.assert_close(warm, expected, rtol=1e-2, atol=1e-3)
        # without an index the start is the coarse sweep, not the previous call's batch
        model(x.flip(0))  # a batch of other samples, the same shape
        assert torch.equal(model(x), expected)


def test_the_cache_is_not_in_the_weights(exported: Path, tmp_path: Path) -> None:
    model, card = pnode_zoo.from_pretrained(exported)
    plain = pnode_zoo.create_model("ncde", num_classes=2, input_shape=(1, LENGTH), hidden=4,
                                   width=8, readout="boundaries", readout_chunks=CHUNKS)
    assert set(load_file(exported / WEIGHTS_FILE)) == set(plain.state_dict())
    x, _, index = _test_batch(with_index=True)
    with torch.no_grad():
        model(x, index=index)
    assert len(model.block.cache) == len(index) and model.block.cache.nbytes > 0
    saved = store.save_pretrained(model, card, tmp_path / "again")
    assert saved.weights_sha256 == card.weights_sha256 == file_sha256(exported / WEIGHTS_FILE)


@pytest.mark.parametrize("with_index", [True, False], ids=["with_index", "without_index"])
def test_eval_reproduces_the_card_with_and_without_indices(exported: Path,
                                                           with_index: bool) -> None:
    model, card = pnode_zoo.from_pretrained(exported)
    data = {**card.data, "init_args": {**card.data["init_args"], "with_index": with_index}}
    assert card.data["init_args"]["with_index"] is True
    value = evaluate(dataclasses.replace(card, data=data), model)
    assert reproduces(card, value)


def test_cli_eval_of_the_directory(exported: Path, cli_here) -> None:
    result = cli_here(["pretrained", "eval", str(exported)])
    assert result.returncode == 0, result.stderr
    card = store.read_card(exported)
    assert f"test/acc {card.metric_value!r} on the italy_power_demand test split" in result.stdout


def test_the_transform_pads_raw_series_as_the_data_module_does(exported: Path) -> None:
    card = store.read_card(exported)
    assert card.preprocessing.pad == "last" and card.preprocessing.input_shape == (1, LENGTH)
    raw, _ = load_ucr_split("ItalyPowerDemand", "test")  # 24 observations each
    x, _, _ = _test_batch(with_index=True)  # the data module's first test batch, in order
    transform = create_transform(card)
    torch.testing.assert_close(transform(np.stack(raw[: len(x)])), x)
    torch.testing.assert_close(transform(raw[0]), x[0])  # one sample stays one


def test_by_name_once_shipped(exported: Path, tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store, "WEIGHTS_DIR", tmp_path / "weights")
    shutil.copytree(exported, tmp_path / "weights" / exported.name)
    assert pnode_zoo.list_pretrained("ncde*") == [exported.name]
    reference, _ = pnode_zoo.from_pretrained(exported)
    by_name = pnode_zoo.create_model(exported.name, pretrained=True).eval()
    by_arch = pnode_zoo.create_model("ncde_parareal", pretrained=True).eval()
    x, _, index = _test_batch(with_index=True)
    with torch.no_grad():
        expected = reference(x)
        assert torch.equal(by_name(x, index=index), expected)
        assert torch.equal(by_arch(x), expected)
    assert store.pretrained_card(exported.name).solver["parareal"]["warm_start"] is True
