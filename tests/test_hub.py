"""Pretrained weights: cards, export, verified loading, twins, URLs, the shipped names."""

from __future__ import annotations

import dataclasses
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import pytorch_lightning as pl
import torch
from clitools import FASHION_MNIST_ABSENT, REPO, missing_data, run_cli

import pnode_zoo
from pnode_zoo.data import DigitsDataModule
from pnode_zoo.data.images import FASHION_MNIST_SYSTEM_DIR
from pnode_zoo.hub import ModelCard, create_transform, load_pretrained, store
from pnode_zoo.hub.card import CARD_FILE, WEIGHTS_FILE, file_sha256, write_manifest
from pnode_zoo.hub.catalogue import CONFIGS, DATASETS
from pnode_zoo.hub.export import evaluate, export_checkpoint, reproduces
from pnode_zoo.hub.table import README, section, table
from pnode_zoo.tasks import Classifier, TrajectoryRegressor

SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
         "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
         "--trainer.logger=false"]
SHIPPED = store.list_pretrained()


class Marker:
    """A pickle that, if unpickled by a trusting loader, creates a file (code from the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def _fit(folder: Path, config: str) -> Path:
    """A short fit of ``config`` in ``folder``; its best checkpoint."""
    result = run_cli(["fit", "--config", str(REPO / config), *SHORT], folder)
    assert result.returncode == 0, result.stderr
    return next(folder.glob("runs/*/*/checkpoints/best-*.ckpt"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint of odenet on digits, written by a (short) `fit`."""
    return _fit(tmp_path_factory.mktemp("fit"), "configs/digits/node.yaml")


@pytest.fixture(scope="module")
def exported(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """That checkpoint exported as a pretrained directory named odenet.digits."""
    directory = tmp_path_factory.mktemp("export") / "odenet.digits"
    export_checkpoint(checkpoint, directory)
    return directory


@pytest.fixture
def hub(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A weights folder holding only the exported odenet.digits, in place of the shipped one."""
    monkeypatch.setattr(store, "WEIGHTS_DIR", tmp_path / "weights")
    shutil.copytree(exported, tmp_path / "weights" / "odenet.digits")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch-hub"))
    return tmp_path / "weights" / "odenet.digits"


def _digits_batch() -> torch.Tensor:
    datamodule = DigitsDataModule()
    datamodule.setup("test")
    return next(iter(datamodule.test_dataloader()))[0]


def _rewrite_card(directory: Path, **changes: object) -> None:
    """Change the card and rewrite the manifest, as whoever writes the directory can."""
    card = ModelCard.from_json((directory / CARD_FILE).read_text())
    (directory / CARD_FILE).write_text(dataclasses.replace(card, **changes).to_json())
    write_manifest(directory)


def test_the_card_round_trips_through_json(exported: Path) -> None:
    card = store.read_card(exported)
    assert ModelCard.from_json(card.to_json()) == card
    assert card.arch == "odenet" and card.arch_args["num_classes"] == 10
    assert card.weights_sha256 == file_sha256(exported / WEIGHTS_FILE)
    assert card.preprocessing.input_shape == (1, 8, 8) and len(card.preprocessing.label_names) == 10
    with pytest.raises(ValueError, match="not a pnode_zoo model card .*missing"):
        ModelCard.from_json('{"name": "x"}')


def test_exported_weights_compute_what_the_checkpoint_computes(checkpoint: Path,
                                                               exported: Path) -> None:
    reference = Classifier.load_from_checkpoint(checkpoint, map_location="cpu",
                                                weights_only=True).eval()
    model, card = pnode_zoo.from_pretrained(exported)
    batch = _digits_batch()
    with torch.no_grad():
        assert torch.equal(model(batch), reference(batch))
    # the card's metric is what Lightning's test loop measures on the checkpoint itself
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    measured = trainer.test(reference, datamodule=DigitsDataModule(), verbose=False)[0]
    assert card.metric == "test/acc" and card.metric_value == measured["test/acc"]


def test_the_transform_reproduces_the_data_modules_inputs(exported: Path) -> None:
    from sklearn.datasets import load_digits

    datamodule = DigitsDataModule()
    datamodule.setup("test")
    raw = load_digits().data[datamodule.indices["test"][:8]]
    expected = datamodule.test_dataloader().dataset.tensors[0][:8]
    transform = create_transform(store.read_card(exported))
    torch.testing.assert_close(transform(raw), expected)


def test_names_tags_and_a_new_head(hub: Path, caplog: pytest.LogCaptureFixture) -> None:
    assert pnode_zoo.list_pretrained() == ["odenet.digits"] == pnode_zoo.list_pretrained("*.dig*")
    model, _ = load_pretrained("odenet.digits")
    batch = _digits_batch()
    by_tag = pnode_zoo.create_model("odenet.digits", pretrained=True).eval()
    by_arch = pnode_zoo.create_model("odenet", pretrained=True).eval()
    fresh = pnode_zoo.create_model("odenet.digits").eval()  # the card's options, no weights
    with torch.no_grad():
        assert torch.equal(by_tag(batch), model(batch))
        assert torch.equal(by_arch(batch), model(batch))
        assert not torch.equal(fresh(batch), model(batch))
    with caplog.at_level(logging.WARNING):
        five = pnode_zoo.create_model("odenet.digits", pretrained=True, num_classes=5)
    assert [r.getMessage() for r in caplog.records] == [
        "odenet.digits: new head head.4 for 5 classes (the weights have 10); the rest is "
        "pretrained"]
    assert torch.equal(five.stem[0].weight, model.stem[0].weight)


def test_an_unknown_name_lists_the_close_ones(hub: Path) -> None:
    with pytest.raises(ValueError, match=r"'odenet.digit' \(did you mean odenet.digits\?\)"):
        load_pretrained("odenet.digit")
    with pytest.raises(ValueError, match="no pretrained weights for 'resnet'"):
        pnode_zoo.create_model("resnet", pretrained=True)


def test_weights_that_differ_from_their_card_are_refused(hub: Path) -> None:
    weights = hub / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="model.safetensors has sha256 .* but .*SHA256SUMS says"):
        load_pretrained("odenet.digits")
    write_manifest(hub)  # a manifest that vouches for them: the card's sha256 still refuses
    with pytest.raises(ValueError, match="has sha256 .* but the card of odenet.digits says"):
        load_pretrained("odenet.digits")


@pytest.mark.parametrize("posing_as", ["model.safetensors", "weights.ckpt", "weights.pt"])
def test_a_pickle_posing_as_weights_never_runs(hub: Path, tmp_path: Path, posing_as: str) -> None:
    marker = tmp_path / "payload-ran"
    payload = hub / posing_as
    torch.save({"state_dict": Marker(marker)}, payload)
    if posing_as == WEIGHTS_FILE:  # a card that vouches for it (the attacker wrote both)
        _rewrite_card(hub, weights_sha256=file_sha256(payload),
                      weights_size=payload.stat().st_size)
        source = "odenet.digits"
    else:
        source = str(payload)
    with pytest.raises(ValueError, match="pickle .* could run code .* not opened"):
        load_pretrained(source)
    assert not marker.exists()
    with payload.open("rb") as file:  # the payload is real: a trusting load runs it
        torch.load(file, weights_only=False)
    assert marker.exists()


def test_weights_of_another_shape_name_the_layer(hub: Path) -> None:
    card = store.read_card(hub)
    _rewrite_card(hub, arch_args={**card.arch_args, "width": 16})
    with pytest.raises(ValueError, match=r"layer stem.0.weight is \[32, 1, 3, 3\] in the weights "
                                         r"of odenet.digits but \[16, 1, 3, 3\] in this model"):
        load_pretrained("odenet.digits")


def test_remote_weights_download_once_with_a_checksum(hub: Path, tmp_path: Path) -> None:
    remote = tmp_path / "remote"
    shutil.copytree(hub, remote)
    cache = tmp_path / "torch-hub" / "pnode_zoo"
    model, card = load_pretrained(remote.as_uri())
    assert card.url == f"{remote.as_uri()}/{WEIGHTS_FILE}"
    assert (cache / "weights" / f"{card.weights_sha256}.safetensors").is_file()
    shutil.rmtree(remote)  # the second load comes from the cache
    again, _ = load_pretrained(remote.as_uri())
    batch = _digits_batch()
    with torch.no_grad():
        assert torch.equal(again(batch), model(batch))
    # a shipped card with a url and no weights beside it: downloaded, checked
    elsewhere = tmp_path / "elsewhere.safetensors"
    (hub / WEIGHTS_FILE).rename(elsewhere)
    shutil.rmtree(cache)
    _rewrite_card(hub, url=elsewhere.as_uri())
    load_pretrained("odenet.digits")
    _rewrite_card(hub, url=elsewhere.as_uri(), weights_sha256="0" * 64)
    with pytest.raises(ValueError, match="another sha256 than its card says"):
        load_pretrained("odenet.digits")
    assert not list((cache / "weights").glob("0000*"))


def test_plain_and_parareal_twins_load_each_others_checkpoints(checkpoint: Path,
                                                              tmp_path: Path) -> None:
    parareal_args = {"width": 32, "parareal": {"num_slices": 4, "tol": 1e-6}}
    plain = Classifier.load_from_checkpoint(checkpoint, weights_only=True).eval()
    twin = Classifier.load_from_checkpoint(checkpoint, weights_only=True, arch="odenet_parareal",
                                           arch_args=parareal_args).eval()
    batch = _digits_batch()
    with torch.no_grad():
        torch.testing.assert_close(twin(batch), plain(batch), atol=1e-4, rtol=1e-4)
    trainer = pl.Trainer(logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(twin)
    parareal_checkpoint = tmp_path / "parareal.ckpt"
    trainer.save_checkpoint(parareal_checkpoint)
    back = Classifier.load_from_checkpoint(parareal_checkpoint, weights_only=True, arch="odenet",
                                           arch_args={"width": 32, "method": "rk4", "steps": 4})
    assert back.hparams.arch == "odenet"
    for key, value in plain.state_dict().items():
        assert torch.equal(back.state_dict()[key], value)


def test_every_task_loads_with_load_from_checkpoint(checkpoint: Path, tmp_path: Path) -> None:
    trajectory = _fit(tmp_path, "configs/lotka_volterra/node.yaml")
    for task, path in [(Classifier, checkpoint), (TrajectoryRegressor, trajectory)]:
        loaded = task.load_from_checkpoint(path, weights_only=True)
        saved = torch.load(path, weights_only=True)["state_dict"]
        assert all(torch.equal(loaded.state_dict()[k], v) for k, v in saved.items())


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_card_matches_its_config_and_its_weights(name: str) -> None:
    card = store.pretrained_card(name)
    assert card.config_path == CONFIGS[name]
    assert (card.licence, card.citation) == DATASETS[card.dataset]
    assert file_sha256(REPO / card.config_path) == card.config_sha256, (
        f"{card.config_path} changed since {name} was trained: run "
        f"`python -m pnode_zoo.hub.regenerate {name}`")
    model, _ = load_pretrained(name)  # checks sha256 and shapes
    assert sum(p.numel() for p in model.parameters()) == card.num_parameters


def test_pretrained_eval_tolerates_last_digit_float_differences_but_not_a_changed_count():
    mse = dataclasses.replace(store.pretrained_card("trajectory_node.lotka_volterra"),
                              metric="test/mse", metric_value=0.0013425318757)
    assert reproduces(mse, 0.0013425329234)  # the same weights on an AMD and an Intel CPU
    assert not reproduces(mse, 0.0013426)
    acc = dataclasses.replace(mse, metric="test/acc", metric_value=0.9)
    assert reproduces(acc, 0.9) and not reproduces(acc, 0.9 + 1e-9)


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_model_reproduces_its_cards_metric(name: str) -> None:
    model, card = load_pretrained(name)
    if card.dataset == "fashion_mnist" and not FASHION_MNIST_SYSTEM_DIR.is_dir():
        missing_data(FASHION_MNIST_ABSENT)
    value = evaluate(card, model)
    if card.metric == "test/acc":  # a count of correct samples
        assert value == card.metric_value
    else:  # float32 kernels differ in the last digits between CPU types
        assert value == pytest.approx(card.metric_value, rel=1e-5, abs=0)


def test_the_readme_table_is_generated_from_the_cards() -> None:
    assert section(README.read_text()) == table(), "run `python -m pnode_zoo.hub.table`"


def test_pretrained_list_and_show_import_no_lightning() -> None:
    script = ("import sys; from pnode_zoo.cli import main; main(['pretrained', 'list']); "
              f"[main(['pretrained', 'show', name]) for name in {SHIPPED!r}]; "
              "assert 'pytorch_lightning' not in sys.modules, 'Lightning imported'")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("name ")


@pytest.mark.parametrize(
    ("args", "message"),
    [(["pretrained", "show", "odenet.digit"], "no pretrained model named 'odenet.digit' (did you "
                                              "mean odenet.digits?)"),
     (["pretrained", "eval"], "usage: python -m pnode_zoo pretrained"),
     (["export", "missing.ckpt", "out"], "checkpoint missing.ckpt does not exist"),
     (["export", "only-one-argument"], "usage: python -m pnode_zoo export CKPT DIR")],
    ids=["unknown_name", "no_name", "missing_checkpoint", "one_argument"])
def test_cli_mistakes_are_one_line_and_exit_2(hub: Path, cli_here, args, message) -> None:
    result = cli_here(args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and message in result.stderr


def test_cli_export_show_and_eval(hub: Path, checkpoint: Path, cli_here, tmp_path: Path) -> None:
    result = cli_here(["export", str(checkpoint), str(tmp_path / "mine"), "--name", "mine.digits"])
    assert result.returncode == 0, result.stderr
    card = store.read_card(tmp_path / "mine")
    assert card.name == "mine.digits"
    assert card.weights_sha256 == file_sha256(tmp_path / "mine" / WEIGHTS_FILE)
    assert card.metric_value == store.read_card(hub).metric_value  # same checkpoint as hub's
    shown = cli_here(["pretrained", "show", "odenet.digits"])
    assert ModelCard.from_json(shown.stdout) == store.read_card(hub)
    result = cli_here(["pretrained", "eval", "odenet.digits"])
    assert result.returncode == 0, result.stderr
    assert f"test/acc {card.metric_value!r} on the digits test split" in result.stdout


@pytest.mark.slow
@pytest.mark.skipif("odenet.digits" not in SHIPPED, reason="odenet.digits does not ship")
def test_test_from_a_pretrained_name_measures_the_cards_metric(cli) -> None:
    result = cli(["test", "--config", str(REPO / "configs/digits/node.yaml"),
                  "--model.pretrained", "odenet.digits", "--trainer.logger=false"])
    assert result.returncode == 0, result.stderr
    card = store.pretrained_card("odenet.digits")
    assert f"{card.metric_value}" in result.stdout.replace("│", " ")


@pytest.mark.slow
@pytest.mark.skipif("fcn.gunpoint" not in SHIPPED, reason="fcn.gunpoint does not ship")
def test_fine_tuning_on_other_classes_gets_a_new_head_in_one_line(cli, tmp_path: Path) -> None:
    result = cli(["fit", "--model.pretrained", "fcn.gunpoint", "--data=UCRDataModule",
                  "--data.name=ArrowHead", *SHORT])
    assert result.returncode == 0, result.stderr
    assert ("fcn.gunpoint: new head head.2 for 3 classes (the weights have 2); the rest is "
            "pretrained\n") in result.stderr
    checkpoint = next(tmp_path.glob("runs/arrowhead-fcn.gunpoint/*/checkpoints/best-*.ckpt"))
    tuned = Classifier.load_from_checkpoint(checkpoint, weights_only=True)
    assert tuned.hparams.pretrained == "fcn.gunpoint" and tuned.hparams.num_classes == 3
