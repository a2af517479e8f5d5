"""`test` and `predict` from a checkpoint: the checkpoint's model unless told otherwise, a
refusal for weights that do not fit, and predictions written (and printed) per run."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from clitools import REPO, read_metrics, run_cli, run_dirs
from sklearn.datasets import load_digits

from pnode_zoo.data import DigitsDataModule, LotkaVolterraDataModule
from pnode_zoo.tasks import TrajectoryRegressor

SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
         "--trainer.limit_val_batches=1", "--trainer.logger=false"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding one short run of the default model (parareal ODE-Net on digits)."""
    cwd = tmp_path_factory.mktemp("trained")
    result = run_cli(["fit", *SHORT, "--trainer.limit_test_batches=1"], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return cwd


def _in_copy(trained: Path, tmp_path: Path) -> Path:
    shutil.copytree(trained / "runs", tmp_path / "runs")
    return tmp_path


def _model_of(run_dir: Path) -> dict:
    return yaml.safe_load((run_dir / "config.yaml").read_text())["model"]["init_args"]


@pytest.mark.slow
def test_predictions_are_written_printed_and_agree_with_test(trained, tmp_path) -> None:
    cwd = _in_copy(trained, tmp_path)
    tested = run_cli(["test", "--ckpt_path", "best", "--trainer.logger=CSVLogger"], cwd)
    assert tested.returncode == 0, tested.stderr[-3000:]
    predicted = run_cli(["predict", "--ckpt_path", "best", "--trainer.logger=false",
                         "--predictions.stdout=true"], cwd)
    assert predicted.returncode == 0, predicted.stderr[-3000:]
    (path,) = cwd.glob("runs/*/*/predictions.csv")
    text = path.read_text()
    assert predicted.stdout == text  # printed as written, and nothing else
    rows = list(csv.DictReader(io.StringIO(text)))
    assert list(rows[0]) == ["sample", "index", "target", "prediction", "probability"]
    # aligned with the source data: the index column points at the sample with that target
    digits = DigitsDataModule()
    digits.setup("test")
    labels = load_digits().target
    assert [int(r["index"]) for r in rows] == digits.indices["test"].tolist()
    assert all(labels[int(r["index"])] == int(r["target"]) for r in rows)
    assert all(0 < float(r["probability"]) <= 1 for r in rows)
    # the accuracy of the file is what `test` measured on the same checkpoint
    accuracy = sum(r["target"] == r["prediction"] for r in rows) / len(rows)
    (metrics,) = cwd.glob("runs/*/*/logs/version_0/metrics.csv")
    (test_acc,) = [float(r["test/acc"]) for r in read_metrics(metrics) if r.get("test/acc")]
    assert accuracy == pytest.approx(test_acc, abs=1e-6)


@pytest.mark.slow
def test_a_config_given_to_test_is_not_replaced(trained, tmp_path) -> None:
    cwd = _in_copy(trained, tmp_path)
    (checkpoint,) = cwd.glob("runs/*/*/checkpoints/last.ckpt")
    plain = run_cli(["test", "--ckpt_path", str(checkpoint), *SHORT], cwd)
    assert plain.returncode == 0, plain.stderr[-3000:]
    assert "note:" not in plain.stderr
    config = str(REPO / "configs" / "digits" / "node.yaml")
    given = run_cli(["test", "--config", config, "--ckpt_path", str(checkpoint), *SHORT], cwd)
    assert given.returncode == 0, given.stderr[-3000:]
    assert ("note: the command's model differs from the checkpoint's: arch='odenet' "
            "(checkpoint: 'odenet_parareal')") in given.stderr
    arches = sorted(_model_of(run)["arch"] for run in run_dirs(cwd))
    # the fit and the plain test ran the checkpoint's model; the test with --config its own
    assert arches == ["odenet", "odenet_parareal", "odenet_parareal"]


@pytest.mark.slow
def test_weights_of_another_model_are_refused(trained, tmp_path) -> None:
    cwd = _in_copy(trained, tmp_path)
    (checkpoint,) = cwd.glob("runs/*/*/checkpoints/last.ckpt")
    before = set((cwd / "runs").rglob("*"))
    result = run_cli(["test", "--model.arch=resnet", "--ckpt_path", str(checkpoint), *SHORT],
                     cwd)
    assert result.returncode == 2
    (error,) = result.stderr.strip().splitlines()
    assert "does not fit this model" in error and "trained as odenet_parareal" in error
    assert set((cwd / "runs").rglob("*")) == before  # no run directory (HOME caches aside)


@pytest.mark.slow
def test_untrained_predictions_on_stdout_are_the_csv_alone(tmp_path) -> None:
    result = run_cli(["predict", "--untrained=true", "--trainer.logger=false",
                      "--predictions.stdout=true"], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "note: predict of untrained weights (--untrained true)" in result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    digits = DigitsDataModule()
    digits.setup("test")
    assert len(rows) == len(digits.splits["test"]) == 360  # one row per test sample, no more
    assert all(list(row) == ["sample", "index", "target", "prediction", "probability"]
               and "" not in row.values() for row in rows)
    assert [int(row["sample"]) for row in rows] == list(range(360))
    (path,) = tmp_path.glob("runs/*/*/predictions.csv")
    assert result.stdout == path.read_text()


def test_trajectory_predictions_have_one_row_per_window_step_and_component() -> None:
    data = LotkaVolterraDataModule(num_points=100, horizon=5)
    data.setup("predict")
    task = TrajectoryRegressor(input_shape=data.input_shape, times=data.times)
    batch = next(iter(data.predict_dataloader()))
    with torch.no_grad():
        outputs = [task.predict_step(batch, 0)]
    rows = task.prediction_rows(outputs, data)
    windows, steps, components = batch[1].shape
    assert len(rows) == windows * steps * components
    assert list(rows[0]) == ["sample", "step", "time", "component", "target", "forecast"]
    last = rows[-1]
    assert (last["sample"], last["step"], last["component"]) == (windows - 1, steps,
                                                                 components - 1)
    assert last["time"] == pytest.approx(data.times[-1])
    assert last["target"] == pytest.approx(float(batch[1][-1, -1, -1]), abs=1e-6)


def test_a_sharded_predict_is_told_by_its_sampler() -> None:
    """``PredictionWriter`` writes one file per rank only when Lightning gave the predict loader
    a distributed sampler: in the loader, or (as Lightning does for predictions) in its batch
    sampler."""
    from torch.utils.data import BatchSampler, DataLoader, DistributedSampler, TensorDataset

    from pnode_zoo.training.predictions import _sharded

    data = TensorDataset(torch.zeros(8, 2))
    shard = DistributedSampler(data, num_replicas=2, rank=0)
    assert not _sharded(DataLoader(data, batch_size=2))
    assert _sharded(DataLoader(data, batch_size=2, sampler=shard))
    assert _sharded([DataLoader(data, batch_sampler=BatchSampler(shard, 2, drop_last=False))])
