"""The LightningCLI of pnode_zoo: defaults, run directories, checkpoints and plain errors.

``PnodeCLI`` parses one training subcommand with LightningCLI's public hooks and ``run=False``
(``app`` has picked the subcommand), then runs the Trainer's method of that name, in its own
run directory (``pnode_zoo.runs``). Mistakes in the input (``UserInputError``, the parser's
errors, the Trainer's ``MisconfigurationException``) are found before that directory is made
(or it is removed again). A checkpoint and its run's ``config.yaml`` are data: the classes they
name must be the zoo's own (``hub.classes``).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Any

from jsonargparse import ArgumentError, Namespace
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, RichModelSummary, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

import pnode_zoo.data  # imported so --data=ShortName resolves
import pnode_zoo.tasks  # noqa: F401  (imported so --model=ShortName resolves)
from pnode_zoo import runs
from pnode_zoo.cli.console import TrainingStopped, finish_wandb, prepare_wandb, quiet, user_error
from pnode_zoo.cli.inputs import (
    LINKED,
    check_config_files,
    checkpoint_defaults,
    model_differences,
    place_loggers,
    require_weights,
    run_name,
)
from pnode_zoo.cli.messages import explain_argument_error
from pnode_zoo.cli.run_config import RunConfig
from pnode_zoo.data import TensorDataModule
from pnode_zoo.distributed.strategy import check_before_launch  # also registers time_parallel
from pnode_zoo.errors import UserInputError
from pnode_zoo.tasks.base import Task
from pnode_zoo.training.checkpoints import (
    AtomicCheckpointIO,
    RandomStateCheckpoint,
    best_and_last,
    check_fits,
    last_only,
    read_checkpoint,
)
from pnode_zoo.training.finite import StopOnNonFinite, training_position
from pnode_zoo.training.monitor import RunMonitor
from pnode_zoo.training.predictions import PredictionWriter

__all__ = ["PnodeArgumentParser", "PnodeCLI", "run"]

RUN_ROOT = "runs"
DEFAULT_DATA = "pnode_zoo.data.DigitsDataModule"
RUN_DIR_VARIABLE = "PNODE_ZOO_RUN_DIR"  # rank 0's run directory, for the ranks it launches
EVALUATING = ("validate", "test", "predict")  # the subcommands that need trained weights


class PnodeArgumentParser(LightningArgumentParser):
    """LightningArgumentParser named ``python -m pnode_zoo`` by default: jsonargparse makes the
    parser of ``--model.help CLASS`` (and of nested classes) as ``type(parser)()``, which
    would otherwise be named after ``sys.argv[0]``, ``__main__.py``."""

    def __init__(self, *args: Any, prog: str = "python -m pnode_zoo", **kwargs: Any) -> None:
        super().__init__(*args, prog=prog, **kwargs)


class PnodeCLI(LightningCLI):
    """LightningCLI with pnode_zoo's defaults (a parareal ODE-Net on digits, W&B logging), one
    run directory per command, checked checkpoints and one-sentence errors.

    Args:
        subcommand: fit, validate, test or predict.
        args: the command line after the subcommand.
        description: what ``SUBCOMMAND --help`` says the subcommand does.
    """

    def __init__(self, subcommand: str, args: list[str], description: str) -> None:
        quiet()
        self.command = subcommand
        self.given = list(args)
        self.run_dir: Path | None = None
        self.created: list[Path] = []  # folders this command made, removed if it is refused
        self.checkpoint: dict[str, Any] | None = None
        self.checkpoint_path: Path | None = None
        self.notes: list[str] = []  # printed once every check has passed
        self.method_arguments: list[str] = []  # the Trainer method's options (--ckpt_path ...)
        self.default_checkpoint = best_and_last(*Task.checkpoint_metric)
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            save_config_callback=RunConfig,
            parser_class=PnodeArgumentParser,
            trainer_defaults={
                "default_root_dir": RUN_ROOT,
                "max_epochs": 20,
                "log_every_n_steps": 10,
                "deterministic": True,
                "logger": {
                    "class_path": "pytorch_lightning.loggers.WandbLogger",
                    "init_args": {"project": "pnode_zoo", "save_dir": RUN_ROOT, "log_model": True},
                },
                "callbacks": [self.default_checkpoint, RandomStateCheckpoint(),
                              StopOnNonFinite(), RichProgressBar(), RichModelSummary()],
            },
            parser_kwargs={
                # allow_abbrev: argparse would take --trainer.max_epoch for --trainer.max_epochs
                "exit_on_error": False, "allow_abbrev": False,
                "prog": f"python -m pnode_zoo {subcommand}",
                "usage": f"python -m pnode_zoo {subcommand} [--config FILE] [--model ...] "
                         "[--data ...] [--trainer.OPTION VALUE] [--ckpt_path PATH|last|best]",
                "description": description,
            },
            args=self.given,
            run=False,  # the subcommand is known: one parser, and `run` calls the Trainer
        )

    # -- parsing -------------------------------------------------------------------------------

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Model and data first, so that `fit --help` leads with them (Lightning puts the
        # trainer's hundred options first).
        parser.add_lightning_class_args(self.model_class, "model", subclass_mode=True)
        parser.add_lightning_class_args(self.datamodule_class, "data", subclass_mode=True)
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{key}": value for key, value in self.trainer_defaults.items()
                             if key != "callbacks"})

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunMonitor, "monitor")  # --monitor.plot_every_n_epochs
        if self.command == "predict":
            parser.add_lightning_class_args(PredictionWriter, "predictions")
        if self.command in EVALUATING:
            parser.add_argument("--untrained", type=bool, default=False,
                                help="evaluate freshly initialised weights on purpose (without "
                                     "it, --ckpt_path or --model.pretrained is required)")
        parser.set_defaults({"model": {"class_path": "pnode_zoo.tasks.Classifier"},
                             "data": {"class_path": DEFAULT_DATA}})
        for attribute in LINKED:
            parser.link_arguments(
                f"data.{attribute}", f"model.init_args.{attribute}", apply_on="instantiate"
            )
        # The Trainer method's own options (--ckpt_path ...), as LightningCLI adds them to its
        # subcommands; `run` passes them on.
        self.method_arguments = parser.add_method_arguments(
            self.trainer_class, self.command, skip=set(self.subcommands()[self.command]))

    def _parse(self, default_data: str) -> Namespace:
        """Parse the command line, twice where a data module other than ``default_data`` is chosen.

        jsonargparse keeps the default data module's init args (digits' batch size, validation
        share) when a config or ``--data`` switches the class (jsonargparse issue 460), so a
        UCR run would silently inherit them; the second parse starts from the chosen module's
        own defaults. The first parse leaves out ``--print_config``, which would print the
        inherited values and exit.
        """
        probe = [arg for arg in self.given if not arg.startswith("--print_config")]
        try:
            # The parser is called directly: LightningCLI's own method warns when given a list.
            config = self.parser.parse_args(probe)
            chosen = config.data.class_path
            if chosen != default_data:
                self.parser.set_defaults({"data": {"class_path": chosen}})
            if chosen != default_data or probe != self.given:
                config = self.parser.parse_args(self.given)
        except ArgumentError as err:
            # keys(): the dotted option names (a Namespace itself is not iterable)
            options = [f"--{key}" for key in self.parser.get_defaults().keys()]  # noqa: SIM118
            raise UserInputError(
                f"{explain_argument_error(str(err), options, LINKED)} "
                f"(see `python -m pnode_zoo {self.command} --help`)") from err
        return config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        check_config_files(self.given)
        self.config = self._parse(DEFAULT_DATA)
        self._read_checkpoint()

    def _read_checkpoint(self) -> None:
        """Refuse to evaluate without weights (``require_weights``), resolve ``--ckpt_path``
        (``last``/``best``: the newest run of this name), read the checkpoint safely, check the
        classes it and its run's config.yaml name (the zoo's own only: ``hub.classes``), and
        rebuild its model unless the command line or config says otherwise.

        Lightning's own version replaces the model of ``--config`` and of the command line with
        the checkpoint's silently. Here the checkpoint's hyperparameters (and, for a checkpoint
        in a run directory, that run's data module) become the defaults: what the user gives
        wins, the rest comes from the checkpoint, and a difference is reported in one line.
        """
        if self.command in EVALUATING:
            require_weights(self.command, self.config)
            if self.config.get("untrained"):
                self.notes.append(f"note: {self.command} of untrained weights (--untrained true)")
        if not self.config.get("ckpt_path"):
            return
        path = self._resolve_checkpoint()
        if path is None:
            self.config.ckpt_path = None
            return
        self.checkpoint = read_checkpoint(path)
        self.checkpoint_path = path
        defaults = checkpoint_defaults(self.checkpoint, path)
        if defaults:
            self.parser.set_defaults(defaults)
            self.config = self._parse(defaults.get("data", {}).get("class_path", DEFAULT_DATA))
        self.config.ckpt_path = str(path)
        differences = model_differences(self.config, defaults["model"]) if (
            "model" in defaults and rank_zero_only.rank == 0) else []
        if differences:  # said once the command is known to run (a refusal says only why)
            self.notes.append(f"note: the command's model differs from the checkpoint's: "
                              f"{'; '.join(differences)}")

    def _resolve_checkpoint(self) -> Path | None:
        given = str(self.config.ckpt_path)
        if given not in ("last", "best"):
            return Path(given)
        name = run_name(self.config)
        try:
            return runs.find_checkpoint(self.config.trainer.default_root_dir or RUN_ROOT, name,
                                        given)
        except UserInputError:
            if self.command == "fit" and given == "last":  # as in Lightning: nothing to resume
                self.notes.append(f"note: no earlier run of {name} to resume; starting a new one")
                return None
            raise

    # -- the run directory --------------------------------------------------------------------

    def before_instantiate_classes(self) -> None:
        config = self.config
        root = Path(config.trainer.default_root_dir or RUN_ROOT)
        name = run_name(config)
        rank = rank_zero_only.rank
        inherited = os.environ.get(RUN_DIR_VARIABLE) if rank != 0 else None
        resumed = (self.command == "fit" and self.checkpoint_path is not None
                   and self.checkpoint_path.name == runs.LAST
                   and runs.run_dir_of_checkpoint(self.checkpoint_path))
        if inherited:
            self.run_dir = Path(inherited)
        elif resumed:
            self.run_dir = resumed
        elif rank == 0:
            self.created = [p for p in (root, root / name) if not p.exists()]
            self.run_dir = runs.create_run_dir(root, name)
            self.created.append(self.run_dir)
        else:  # a rank started by torchrun: rank 0 makes the directory and writes every file
            self.run_dir = root / name / f".rank{rank}"
        os.environ[RUN_DIR_VARIABLE] = str(self.run_dir)
        config.trainer.default_root_dir = str(self.run_dir)
        place_loggers(config.trainer.logger, self.run_dir, (str(root), RUN_ROOT))

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = self.config_init.get("trainer") or {}
        if not trainer.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        # under --predictions.stdout true, standard output is the CSV alone
        csv_out = getattr(self.config_init.get("predictions"), "stdout", False)
        if csv_out:
            kwargs["enable_progress_bar"] = False
        if trainer.get("enable_progress_bar") is False or csv_out:  # the default bar would
            self.trainer_defaults["callbacks"] = [  # contradict it
                c for c in self.trainer_defaults["callbacks"] if not isinstance(c, RichProgressBar)
            ]
        try:
            return super().instantiate_trainer(**kwargs)
        except MisconfigurationException as err:  # the Trainer's check of its options
            raise UserInputError(str(err)) from err

    def instantiate_classes(self) -> None:
        self.save_config_kwargs = {"run_dir": str(self.run_dir)}
        try:
            super().instantiate_classes()
            self._check_and_prepare()
        except BaseException as err:
            self._discard_run_dir()
            cause = user_error(err)
            if cause is None:
                raise
            raise UserInputError(str(cause)) from err

    def _check_and_prepare(self) -> None:
        check_before_launch(self.trainer, self.model)
        if self.checkpoint is not None:
            check_fits(self.model, self.checkpoint, self.checkpoint_path)
        if isinstance(self.datamodule, TensorDataModule) and not getattr(
                self.datamodule, "download", False):
            self.datamodule.setup(self.command)  # bad data is refused before the run starts
        self._configure_checkpoints()
        if rank_zero_only.rank != 0:
            return
        runs.lock_run_dir(self.run_dir)
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                # Private, and kept on purpose: Lightning always passes anonymous=None to
                # wandb.init, which wandb 0.31 answers with a deprecation line at every start
                # (even under WANDB_SILENT), and no constructor argument leaves the key out.
                # tests/test_private_apis.py fails, naming it, if the attribute changes.
                logger._wandb_init.pop("anonymous", None)
                prepare_wandb(str(self.run_dir))
        for note in self.notes:
            print(note, file=sys.stderr)
        print(f"run directory: {self.run_dir}", file=sys.stderr)

    def _configure_checkpoints(self) -> None:
        callbacks = self.trainer.callbacks
        metric, mode = getattr(self.model, "checkpoint_metric", Task.checkpoint_metric)
        if self.default_checkpoint in callbacks:
            # without validation there is no best to pick: keep the last epoch only
            replacement = (last_only() if self.trainer.limit_val_batches == 0
                           else best_and_last(metric, mode))
            callbacks[callbacks.index(self.default_checkpoint)] = replacement
        folder = os.path.realpath(self.run_dir / runs.CHECKPOINTS)
        for callback in callbacks:
            if isinstance(callback, ModelCheckpoint) and callback.dirpath is None:
                callback.dirpath = folder

    def _discard_run_dir(self) -> None:
        """Remove the folders this command made (it was refused before it wrote anything)."""
        if self.created:
            shutil.rmtree(self.created[-1], ignore_errors=True)
            for folder in reversed(self.created[:-1]):
                try:
                    folder.rmdir()
                except OSError:  # another run put something there meanwhile
                    break
            self.created = []
        os.environ.pop(RUN_DIR_VARIABLE, None)

    # -- running ----------------------------------------------------------------------------------

    def run(self) -> None:
        """The Trainer's method of the subcommand; ``fit`` then tests its best checkpoint."""
        options = {key: self.config_init.get(key) for key in self.method_arguments}
        succeeded = False
        try:
            getattr(self.trainer, self.command)(model=self.model, datamodule=self.datamodule,
                                                **options)
            if self.command == "fit":
                checkpoint = self.trainer.checkpoint_callback
                best = checkpoint.best_model_path if checkpoint is not None else ""
                self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
            succeeded = True
        except FloatingPointError as err:
            stage = "training" if self.command == "fit" else self.command
            where = training_position(self.trainer)
            message = str(err) if where in str(err) else f"{err} (at {where})"
            raise TrainingStopped(f"{stage} stopped: {message}") from err
        finally:
            os.environ.pop(RUN_DIR_VARIABLE, None)
            runs.release_run_dirs()
            finish_wandb(succeeded)


def run(subcommand: str, args: list[str], description: str) -> None:
    """Parse and run a training subcommand (see ``PnodeCLI``).

    Args:
        subcommand: fit, validate, test or predict.
        args: the command line after the subcommand.
        description: what ``SUBCOMMAND --help`` says the subcommand does.
    """
    PnodeCLI(subcommand, args, description).run()
