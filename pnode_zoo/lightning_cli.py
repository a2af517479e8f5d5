"""The LightningCLI of pnode_zoo: defaults, argument links, W&B set-up and test-after-fit."""

from __future__ import annotations

import os
import sys

import yaml
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, RichModelSummary, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.utilities.exceptions import MisconfigurationException

import pnode_zoo.data  # imported so --data=ShortName resolves
import pnode_zoo.tasks  # noqa: F401  (imported so --model=ShortName resolves)
from pnode_zoo.cli import UserInputError, prepare_wandb
from pnode_zoo.distributed.strategy import check_before_launch  # also registers time_parallel
from pnode_zoo.tasks.monitor import RunMonitor

RUN_DIR = "runs"
DEFAULT_DATA = "pnode_zoo.data.DigitsDataModule"


def checkpoint_callback() -> ModelCheckpoint:
    """Keep the best and the last checkpoint by validation accuracy; flat file names."""
    return ModelCheckpoint(
        monitor="val/acc",
        mode="max",
        filename="epoch{epoch:03d}-val_acc{val/acc:.4f}",
        auto_insert_metric_name=False,
        save_last=True,
    )


def root_cause(err: BaseException) -> BaseException:
    """The innermost exception of a chain (jsonargparse wraps the one a constructor raised)."""
    while err.__cause__ is not None or err.__context__ is not None:
        err = err.__cause__ or err.__context__
    return err


class SaveConfigToLoggers(SaveConfigCallback):
    """Save ``config.yaml`` in the run directory and the whole configuration in the loggers'
    hyperparameters (W&B's run config), under ``cli``."""

    def save_config(self, trainer: Trainer, pl_module: LightningModule, stage: str) -> None:
        config = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        for logger in trainer.loggers:
            logger.log_hyperparams({"cli": config})


def wandb_offline() -> bool:
    """Whether W&B will not reach its server (``WANDB_MODE`` offline or disabled)."""
    return os.environ.get("WANDB_MODE", "online") in ("offline", "dryrun", "disabled")


class PnodeCLI(LightningCLI):
    """LightningCLI with pnode_zoo's defaults: a NODE on digits, W&B logging, rich output."""

    def __init__(self, args: list[str] | None = None) -> None:
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            save_config_callback=SaveConfigToLoggers,
            save_config_kwargs={"overwrite": True},
            trainer_defaults={
                "default_root_dir": RUN_DIR,
                "max_epochs": 20,
                "log_every_n_steps": 10,
                "deterministic": True,
                "logger": {
                    "class_path": "pytorch_lightning.loggers.WandbLogger",
                    "init_args": {"project": "pnode_zoo", "save_dir": RUN_DIR, "log_model": True},
                },
                "callbacks": [checkpoint_callback(), RichProgressBar(), RichModelSummary()],
            },
            parser_kwargs={"exit_on_error": False},
            args=args,
        )

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunMonitor, "monitor")  # --monitor.plot_every_n_epochs
        parser.set_defaults(
            {
                "model": {"class_path": "pnode_zoo.tasks.Classifier"},
                "data": {"class_path": DEFAULT_DATA},
            }
        )
        for attribute in ("num_classes", "input_shape", "times"):
            parser.link_arguments(
                f"data.{attribute}", f"model.init_args.{attribute}", apply_on="instantiate"
            )

    def parse_arguments(self, parser: LightningArgumentParser, args: list[str] | None) -> None:
        """Parse twice: once to learn the data module chosen, then from that module's defaults.

        jsonargparse keeps the default data module's init args (digits' batch size, validation
        share) when a config or ``--data`` switches the class (jsonargparse issue 460), so a
        UCR run would silently inherit them. The first parse leaves out ``--print_config``,
        which would print the inherited values and exit.
        """
        given = sys.argv[1:] if args is None else list(args)
        probe = [arg for arg in given if not arg.startswith("--print_config")]
        # The parser is called directly: LightningCLI's own method warns when given a list.
        self.config = parser.parse_args(probe)
        chosen = self.config[self.config.subcommand].data.class_path
        if chosen != DEFAULT_DATA:
            for subcommand_parser in self._subcommand_parsers.values():
                subcommand_parser.set_defaults({"data": {"class_path": chosen}})
        if chosen != DEFAULT_DATA or probe != given:
            self.config = parser.parse_args(given)

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = config.trainer.default_root_dir or RUN_DIR
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            # The default save_dir follows --trainer.default_root_dir, so one option moves a run.
            if init_args is not None and init_args.get("save_dir") == RUN_DIR:
                init_args.save_dir = run_dir
            if "WandbLogger" in str(getattr(logger, "class_path", "")):
                prepare_wandb(run_dir)
                # Offline, checkpoints stay in the run directory instead of being copied into
                # W&B's staging area for a later sync ("all" still logs every one).
                if wandb_offline() and init_args.get("log_model") is True:
                    init_args.log_model = False

    def instantiate_classes(self) -> None:
        try:
            super().instantiate_classes()
            check_before_launch(self.trainer, self.model)
        except (ValueError, TypeError, FileNotFoundError, MisconfigurationException) as err:
            raise UserInputError(str(root_cause(err))) from err

    def after_fit(self) -> None:
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
