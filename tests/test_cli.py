"""The command line, run as a user would: in a subprocess, offline, in a fresh directory."""

import csv
import inspect

import pytest

from pnode_zoo.data import UCRDataModule
from pnode_zoo.tasks import panels

FAST = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=3",
        "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=2"]


def test_help_lists_subcommands_without_lightning(cli):
    result = cli(["--help"])
    assert result.returncode == 0
    for word in ("fit", "validate", "test", "predict", "models"):
        assert word in result.stdout


def test_models_lists_registry_and_one_models_options(cli):
    listing = cli(["models"])
    assert listing.returncode == 0
    assert "odenet" in listing.stdout and "resnet" in listing.stdout
    detail = cli(["models", "resnet"])
    assert "num_blocks" in detail.stdout and "Args:" in detail.stdout


def test_fit_help_documents_arguments_from_docstrings(cli):
    result = cli(["fit", "--model.help", "Classifier"])
    assert result.returncode == 0
    assert "peak learning rate of AdamW" in result.stdout


@pytest.mark.parametrize("source", ["config", "command line"])
def test_a_chosen_data_module_starts_from_its_own_defaults(cli, tmp_path, source):
    # jsonargparse would carry the default data module's (digits') init args over to the class
    # a config or --data picks (jsonargparse issue 460); UCR's batch size default differs.
    (tmp_path / "ucr.yaml").write_text("data: {class_path: UCRDataModule}\n")
    chosen = ["--config=ucr.yaml"] if source == "config" else ["--data=UCRDataModule"]
    default = inspect.signature(UCRDataModule).parameters["batch_size"].default
    result = cli(["fit", *chosen, "--print_config"])
    assert result.returncode == 0, result.stderr
    assert f"batch_size: {default}" in result.stdout and default != 64
    given = cli(["fit", *chosen, "--data.batch_size=64", "--print_config"])
    assert "batch_size: 64" in given.stdout  # a value given equal to digits' default stays


@pytest.mark.slow
def test_fit_trains_tests_and_is_reproducible(cli, tmp_path):
    args = ["fit", *FAST, "--trainer.logger=CSVLogger", "--trainer.default_root_dir=out"]
    first = cli(args)
    assert first.returncode == 0, first.stderr
    assert "test/acc" in first.stdout
    checkpoints = list((tmp_path / "out").rglob("*.ckpt"))
    assert checkpoints and all(c.parent.name == "checkpoints" for c in checkpoints)
    assert cli(args).returncode == 0
    assert not (tmp_path / "runs").exists()  # the logger follows default_root_dir
    runs = sorted((tmp_path / "out").rglob("metrics.csv"))
    assert len(runs) == 2
    # everything but the wall-clock numbers is identical
    clock = (panels.EPOCH_TIME, panels.SAMPLES_PER_SECOND)
    first_rows, second_rows = ([{k: v for k, v in row.items() if k not in clock}
                                for row in csv.DictReader(r.open())] for r in runs)
    assert first_rows == second_rows
    assert any(row.get("test/acc") for row in first_rows)


@pytest.mark.slow
def test_wandb_runs_offline_without_key_and_keeps_files_in_run_dir(cli, tmp_path):
    result = cli(["fit", *FAST], env={"WANDB_MODE": None})
    assert result.returncode == 0, result.stderr
    assert "W&B: no API key found, logging offline" in result.stderr
    assert list((tmp_path / "runs/wandb").glob("offline-run-*/run-*.wandb"))
    assert not (tmp_path / ".cache" / "wandb").exists()
    assert not (tmp_path / ".config" / "wandb").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model.arch=nope"], "unknown model 'nope'"),
        (["--no_such_key=1"], "unrecognized arguments: --no_such_key"),
        (["--config", "missing.yaml"], "File does not exist"),
        (["--trainer.max_epochs=-3"], "max_epochs"),
        (["--data.batch_size=0"], "data.batch_size must be at least 1"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(cli, tmp_path, args, message):
    result = cli(["fit", "--trainer.logger=false", *args])
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "runs").exists()


def test_unknown_model_name_in_models_subcommand(cli):
    result = cli(["models", "nope"])
    assert result.returncode == 2 and "unknown model 'nope'" in result.stderr
