"""The callback that writes a command's configuration into its run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace
from pytorch_lightning import LightningModule, Trainer
from pytorch_lightning.cli import LightningArgumentParser, SaveConfigCallback

from pnode_zoo import runs

__all__ = ["RunConfig"]


class RunConfig(SaveConfigCallback):
    """Save the command's configuration as ``config.yaml`` in its run directory, and the whole
    configuration in the loggers' hyperparameters (W&B's run config), under ``cli``.

    LightningCLI's own callback writes to the logger's folder, which differs between loggers
    (W&B's is shared by every run); a resumed run adds ``config.resume-<k>.yaml``.

    Args:
        parser: the command's parser.
        config: its parsed configuration.
        run_dir: the run directory.
    """

    def __init__(self, parser: LightningArgumentParser, config: Namespace, run_dir: str,
                 **kwargs: Any) -> None:
        super().__init__(parser, config, save_to_log_dir=False, **kwargs)
        self.run_dir = Path(run_dir)

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        path = self.run_dir / runs.CONFIG
        if path.exists():
            resumptions = len(list(self.run_dir.glob("config.resume-*.yaml")))
            path = self.run_dir / f"config.resume-{resumptions + 1}.yaml"
        self.parser.save(self.config, str(path), skip_unset=False)
        config = yaml.safe_load(self.parser.dump(self.config, skip_unset=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"cli": config})
