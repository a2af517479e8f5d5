"""Every configuration under configs/ trains for a few batches through the command line (in this
process: these fits start no other process, and 23 interpreter starts would cost minutes)."""

from pathlib import Path

import pytest
from clitools import FASHION_MNIST_ABSENT, REPO, missing_data

from pnode_zoo.data.images import FASHION_MNIST_SYSTEM_DIR

CONFIGS = sorted(REPO.glob("configs/**/*.yaml"))
SHORT = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
         "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
         "--trainer.logger=false", "--trainer.num_sanity_val_steps=0"]


def needs_missing_files(config: Path) -> str | None:
    """Why a configuration cannot run here, or None."""
    if "FashionMNIST" in config.read_text() and not FASHION_MNIST_SYSTEM_DIR.is_dir():
        return FASHION_MNIST_ABSENT
    return None


def test_there_are_configs_for_every_task():
    tasks = {config.parent.name for config in CONFIGS}
    assert {"digits", "fashion_mnist", "gunpoint", "italy_power_demand", "basic_motions",
            "lotka_volterra", "lynx", "acsf1", "osuleaf", "japanese_vowels"} <= tasks


@pytest.mark.slow
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: str(c.relative_to(REPO / "configs")))
def test_config_fits_a_few_batches(cli_here, config):
    reason = needs_missing_files(config)
    if reason:
        missing_data(reason)
    result = cli_here(["fit", "--config", str(config), *SHORT])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "test/" in result.stdout  # fit ends with the test of the best checkpoint
