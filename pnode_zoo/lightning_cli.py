"""The LightningCLI of pnode_zoo: defaults, run directories, checkpoints and plain errors.

Every command runs in its own run directory (see ``pnode_zoo.runs``); mistakes in the input
(``UserInputError``, the parser's errors, the Trainer's ``MisconfigurationException``) are found
before that directory is made (or it is removed again), so a refused command leaves nothing
behind. A checkpoint and its run's ``config.yaml`` are data: the task and data module they name
must be the zoo's own (``hub.classes``).
"""

from __future__ import annotations

import inspect
import logging
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import ArgumentError, Namespace
from pytorch_lightning import LightningDataModule, LightningModule, Trainer
from pytorch_lightning.callbacks import ModelCheckpoint, RichModelSummary, RichProgressBar
from pytorch_lightning.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from pytorch_lightning.loggers import WandbLogger
from pytorch_lightning.utilities.exceptions import MisconfigurationException
from pytorch_lightning.utilities.rank_zero import rank_zero_only

import pnode_zoo.data  # imported so --data=ShortName resolves
import pnode_zoo.tasks  # noqa: F401  (imported so --model=ShortName resolves)
from pnode_zoo import runs
from pnode_zoo.cli import TrainingStopped, UserInputError, prepare_wandb, wandb_has_api_key
from pnode_zoo.data import TensorDataModule
from pnode_zoo.distributed.strategy import check_before_launch  # also registers time_parallel
from pnode_zoo.hub.classes import resolve_class
from pnode_zoo.suggest import did_you_mean
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

RUN_ROOT = "runs"
DEFAULT_DATA = "pnode_zoo.data.DigitsDataModule"
LINKED = ("num_classes", "input_shape", "times", "irregular")  # model options the data sets
RUN_DIR_VARIABLE = "PNODE_ZOO_RUN_DIR"  # rank 0's run directory, for the ranks it launches
BASE_CLASSES = {"Task", "TensorDataModule", "ImageDataModule", "TrajectoryDataModule"}  # abstract
EVALUATING = ("validate", "test", "predict")  # the subcommands that need trained weights


def user_error(err: BaseException | None) -> UserInputError | None:
    """The UserInputError in an exception's chain (jsonargparse wraps what a constructor
    raised), or None: then it is a bug, not the user's mistake."""
    while err is not None:
        if isinstance(err, UserInputError):
            return err
        err = err.__cause__ or err.__context__
    return None


def require_weights(subcommand: str, config: Namespace) -> None:
    """UserInputError unless ``validate``/``test``/``predict`` has weights to evaluate: a
    checkpoint, a pretrained name, or ``--untrained true`` (and not both of the last and one
    of the first).

    Args:
        subcommand: the subcommand.
        config: its parsed configuration.
    """
    model_args = config.model.get("init_args") or {}
    given = [option for option, value in (("--ckpt_path", config.get("ckpt_path")),
                                          ("--model.pretrained", model_args.get("pretrained")))
             if value]
    if config.get("untrained") and given:
        raise UserInputError(f"{subcommand}: --untrained true contradicts {given[0]}; give one")
    if not (given or config.get("untrained")):
        raise UserInputError(
            f"{subcommand} needs trained weights: give a checkpoint with --ckpt_path "
            "PATH|last|best or pretrained weights with --model.pretrained NAME (or "
            f"--untrained true to {subcommand} freshly initialised weights on purpose)")


def quiet() -> None:
    """Keep the terminal to what a user acts on: no tips or start-up chatter.

    Lightning's informational lines (seed, accelerators, tips, checkpoint restoring) and the
    named warnings below are hidden; every other warning, deprecations included, shows.
    ``PNODE_ZOO_DEBUG=1`` shows everything.
    """
    if os.environ.get("PNODE_ZOO_DEBUG"):
        return
    for name in ("pytorch_lightning", "lightning_fabric", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    # Lightning 2.6's own use of torch's pytree (pytorch_lightning/utilities/_pytree.py), at
    # every predict and test: Lightning's to fix, nothing a user can change.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning)
    # A resumed run writes into its own checkpoint folder; a test rebuilds no checkpoint state.
    warnings.filterwarnings("ignore", message="Checkpoint directory .* exists and is not empty")
    warnings.filterwarnings("ignore", message="The dirpath has changed from")
    # Step logs follow the optimizer steps of the whole fit, not of one epoch, so an epoch
    # shorter than log_every_n_steps still logs every that many steps.
    warnings.filterwarnings("ignore", message="The number of training batches .* is smaller than "
                            "the logging interval")


def check_config_files(args: list[str]) -> None:
    """UserInputError for a ``--config`` file that is missing, empty, not YAML or not a mapping.

    jsonargparse reports these as "Unexpected config" or a YAML parser trace without the
    file's name; here each is one sentence naming the file (and the line, for YAML errors).
    """
    pairs = zip(args, args[1:], strict=False)
    paths = [value for flag, value in pairs if flag in ("-c", "--config")]
    paths += [arg.split("=", 1)[1] for arg in args if arg.startswith("--config=")]
    for path in map(Path, paths):
        if not path.is_file():
            raise UserInputError(f"config file {path} does not exist; check the path")
        try:
            content = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            mark = getattr(err, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            problem = getattr(err, "problem", None) or str(err).splitlines()[0]
            raise UserInputError(
                f"config file {path} is not valid YAML{where} ({problem}); fix the file"
            ) from None
        if content is None:
            raise UserInputError(
                f"config file {path} is empty; a config is a YAML mapping such as "
                "`trainer: {max_epochs: 5}` (see configs/)"
            )
        if not isinstance(content, dict):
            raise UserInputError(
                f"config file {path} holds a {type(content).__name__}, not a mapping of options "
                "such as `trainer: {max_epochs: 5}` (see configs/)"
            )


def _import(path: str) -> Any:
    module, _, name = path.rpartition(".")
    return getattr(__import__(module, fromlist=[name]), name)


def _subclass_names(base_path: str) -> list[str]:
    """Names of the imported subclasses of ``base_path`` (what a short class name may be)."""
    try:
        base = _import(base_path)
    except (ImportError, AttributeError, ValueError):
        return []
    found, todo = set(), [base]
    while todo:
        for sub in todo.pop().__subclasses__():
            if sub not in found:
                found.add(sub)
                todo.append(sub)
    return sorted({sub.__name__ for sub in found} - BASE_CLASSES)


def _block(message: str, heading: str) -> str:
    """The last line of ``message`` holding ``heading`` and the more indented lines below it."""
    lines = message.splitlines()
    start = max(i for i, line in enumerate(lines) if heading in line)
    indent = len(lines[start]) - len(lines[start].lstrip())
    block = [lines[start]]
    for line in lines[start + 1:]:
        if line.strip() and len(line) - len(line.lstrip()) <= indent:
            break
        block.append(line)
    return "\n".join(block)


def explain_argument_error(message: str, options: list[str]) -> str:
    """One sentence for a jsonargparse error: the option, what was given, what was expected.

    Args:
        message: the text of jsonargparse's ArgumentError (often a dump of nested attempts).
        options: the option strings of the subcommand, for close-match suggestions.
    """
    keys = re.findall(r'Parser key "([^"]+)"', message)
    first = message.strip().splitlines()[0] if message.strip() else "invalid arguments"
    if match := re.match(r"unrecognized arguments: (\S+)", first, re.IGNORECASE):
        option = match.group(1).split("=", 1)[0]
        return f"unknown option {option}{did_you_mean(option, options)}"
    if match := re.search(r"does not accept option '([^']+)'", first):
        option = f"--{match.group(1)}"
        return f"unknown option {option} in the config{did_you_mean(option, options)}"
    if match := re.search(r"invalid choice: '([^']+)' \(choose from (.*)\)", first):
        choices = re.findall(r"'([^']+)'", match.group(2))
        return (f"unknown subcommand {match.group(1)!r}{did_you_mean(match.group(1), choices)}; "
                "see `python -m pnode_zoo --help`")
    if not keys:
        return first
    key = keys[0]
    class_path = re.search(r"Problem with given class_path '([^']+)'", message)
    if (match := re.search(r"Option '([^']+)' is not accepted", message)) and class_path:
        cls = _import(class_path.group(1))
        accepted = [name for name in inspect.signature(cls).parameters if name not in LINKED]
        return (f"unknown option --{key}.{match.group(1)}: {cls.__name__} has no option "
                f"{match.group(1)!r}{did_you_mean(match.group(1), accepted)}; its options: "
                f"{', '.join(accepted)}")
    nested = re.search(r"NestedArg\(key='([^']*)'", message)
    if (match := re.search(r"Expected a dot import path string: (\S+)", message)) and nested:
        return (f"--{key}.{nested.group(1)}: options of --{key} need its class name, not "
                f"{match.group(1)!r} (e.g. --trainer.strategy=TimeParallelStrategy)")
    if match:
        subtypes = re.search(r"Subtypes: \[.*?<class '(\w+\.[\w.]+)'>", message)
        choices = _subclass_names(subtypes.group(1)) if subtypes else []
        known = f"; known: {', '.join(choices)}" if choices else ""
        return (f"--{key}: no class named {match.group(1)!r}"
                f"{did_you_mean(match.group(1), choices)}{known}")
    inner_key = ".".join(keys[1:])
    option = f"--{key}.{inner_key}" if inner_key else f"--{key}"
    innermost = _block(message, f'Parser key "{keys[-1]}"')  # the option's own errors
    given = re.findall(r"(?:Got value|Given value): (.*)", innermost)
    value = given[-1].strip() if given else "?"
    if nested := re.fullmatch(r"NestedArg\(key='[^']*', val=(.*)\)", value):
        value = nested.group(1)
    types = re.findall(r"Expected a <class '(?:[\w.]+\.)?(\w+)'>", innermost)
    literals = re.findall(r"Expected a typing\.Literal\[(.*)\]", innermost)
    names = [name for name in dict.fromkeys(types) if name != "NoneType"]
    if literals:
        names.append(f"one of {', '.join(dict.fromkeys(', '.join(literals).split(', ')))}")
    if "NoneType" in types:
        names.append("null")
    wanted = " or ".join(names) if names else "another value"
    return f"{option}: expected {wanted}, got {value}"


def run_name(config: Namespace) -> str:
    """What a run trains, as a folder name: ``<data>-<arch>``, e.g. ``gunpoint-odenet1d`` (or
    ``<data>-<pretrained name>`` for a run started from pretrained weights).

    The data part is the data module's ``name`` option where it has one (UCR/UEA and forecast
    sets), else its class name without ``DataModule``.
    """
    data, model = config.get("data"), config.get("model")
    data_args = (data.get("init_args") or {}) if data else {}
    data_part = data_args.get("name") or str(data.class_path).rsplit(".", 1)[-1].removesuffix(
        "DataModule") if data else "nodata"
    model_args = model.get("init_args") or {}
    model_part = (model_args.get("pretrained") or model_args.get("arch")
                  or str(model.class_path).rsplit(".", 1)[-1])
    return re.sub(r"[^a-z0-9_.-]+", "_", f"{data_part}-{model_part}".lower())


def _plain(value: Any) -> Any:
    """``value`` with Namespaces as dicts and tuples as lists, for comparing configurations."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


class RunConfig(SaveConfigCallback):
    """Save the command's configuration as ``config.yaml`` in its run directory, and the whole
    configuration in the loggers' hyperparameters (W&B's run config), under ``cli``.

    LightningCLI's own callback writes to the logger's folder, which differs between loggers
    (W&B's is shared by every run); a resumed run adds ``config.resume-<k>.yaml``.
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


def wandb_offline() -> bool:
    """Whether W&B will not reach its server: ``WANDB_MODE`` offline or disabled, or no mode
    and no API key (``prepare_wandb`` then goes offline)."""
    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        return not wandb_has_api_key()
    return mode in ("offline", "dryrun", "disabled")


class PnodeCLI(LightningCLI):
    """LightningCLI with pnode_zoo's defaults (a parareal ODE-Net on digits, W&B logging), one
    run directory per command, checked checkpoints and one-sentence errors.

    Args:
        args: the command line after ``python -m pnode_zoo``.
    """

    def __init__(self, args: list[str]) -> None:
        quiet()
        self.given = list(args)
        self.run_dir: Path | None = None
        self.created: list[Path] = []  # folders this command made, removed if it is refused
        self.checkpoint: dict[str, Any] | None = None
        self.checkpoint_path: Path | None = None
        self.notes: list[str] = []  # printed once every check has passed
        self.default_checkpoint = best_and_last(*Task.checkpoint_metric)
        # allow_abbrev: argparse would take --trainer.max_epoch for --trainer.max_epochs
        strict = {"exit_on_error": False, "allow_abbrev": False}
        parser_kwargs: dict[str, Any] = dict(strict)
        for subcommand in self.subcommands():
            parser_kwargs[subcommand] = {
                **strict,
                "usage": f"python -m pnode_zoo {subcommand} [--config FILE] [--model ...] "
                         "[--data ...] [--trainer.OPTION VALUE] [--ckpt_path PATH|last|best]",
            }
        super().__init__(
            LightningModule,
            LightningDataModule,
            subclass_mode_model=True,
            subclass_mode_data=True,
            seed_everything_default=0,
            auto_configure_optimizers=False,
            save_config_callback=RunConfig,
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
            parser_kwargs=parser_kwargs,
            args=self.given,
        )

    # -- parsing -------------------------------------------------------------------------------

    def add_core_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        # Model and data first, so that `fit --help` leads with them (Lightning puts the
        # trainer's hundred options first).
        parser.add_lightning_class_args(self._model_class, "model", subclass_mode=True)
        parser.add_lightning_class_args(self._datamodule_class, "data", subclass_mode=True)
        parser.add_lightning_class_args(self.trainer_class, "trainer")
        parser.set_defaults({f"trainer.{key}": value for key, value in self.trainer_defaults.items()
                             if key != "callbacks"})

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        parser.add_lightning_class_args(RunMonitor, "monitor")  # --monitor.plot_every_n_epochs
        parser.set_defaults({"model": {"class_path": "pnode_zoo.tasks.Classifier"},
                             "data": {"class_path": DEFAULT_DATA}})
        for attribute in LINKED:
            parser.link_arguments(
                f"data.{attribute}", f"model.init_args.{attribute}", apply_on="instantiate"
            )

    def _prepare_subcommand_parser(self, klass: type, subcommand: str,
                                   **kwargs: Any) -> LightningArgumentParser:
        # LightningCLI has no public hook per subcommand; the writer's options belong to predict.
        parser = super()._prepare_subcommand_parser(klass, subcommand, **kwargs)
        if subcommand == "predict":
            parser.add_lightning_class_args(PredictionWriter, "predictions")
        if subcommand in EVALUATING:
            parser.add_argument("--untrained", type=bool, default=False,
                                help="evaluate freshly initialised weights on purpose (without "
                                     "it, --ckpt_path or --model.pretrained is required)")
        return parser

    def _parse(self, parser: LightningArgumentParser, default_data: str) -> Namespace:
        """Parse the command line, twice where a data module other than ``default_data`` is chosen.

        jsonargparse keeps the default data module's init args (digits' batch size, validation
        share) when a config or ``--data`` switches the class (jsonargparse issue 460), so a
        UCR run would silently inherit them; the second parse starts from the chosen module's
        own defaults. The first parse leaves out ``--print_config``, which would print the
        inherited values and exit.
        """
        probe = [arg for arg in self.given if not arg.startswith("--print_config")]
        # The parser is called directly: LightningCLI's own method warns when given a list.
        config = parser.parse_args(probe)
        chosen = config[config.subcommand].data.class_path
        if chosen != default_data:
            for subcommand_parser in self._subcommand_parsers.values():
                subcommand_parser.set_defaults({"data": {"class_path": chosen}})
        if chosen != default_data or probe != self.given:
            config = parser.parse_args(self.given)
        return config

    def parse_arguments(self, parser: LightningArgumentParser, args: Any) -> None:
        check_config_files(self.given)
        try:
            self.config = self._parse(parser, DEFAULT_DATA)
        except ArgumentError as err:
            raise UserInputError(self._explain(err)) from err

    def _explain(self, err: ArgumentError) -> str:
        subcommand = self.given[0] if self.given else ""
        parser = self._subcommand_parsers.get(subcommand, self.parser)
        options = [o for o in parser._option_string_actions if o.startswith("--")]
        return (f"{explain_argument_error(str(err), options)} "
                f"(see `python -m pnode_zoo {subcommand or ''} --help`)".replace("  ", " "))

    def _parse_ckpt_path(self) -> None:
        """Refuse to evaluate without weights (``require_weights``), resolve ``--ckpt_path``
        (``last``/``best``: the newest run of this name), read the checkpoint safely, check the
        classes it and its run's config.yaml name (the zoo's own only: ``hub.classes``), and
        rebuild its model unless the command line or config says otherwise.

        Lightning's own version replaces the model of ``--config`` and of the command line with
        the checkpoint's silently. Here the checkpoint's hyperparameters (and, for a checkpoint
        in a run directory, that run's data module) become the defaults: what the user gives
        wins, the rest comes from the checkpoint, and a difference is reported in one line.
        """
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        if subcommand in EVALUATING:
            require_weights(subcommand, config)
            if config.get("untrained"):
                self.notes.append(f"note: {subcommand} of untrained weights (--untrained true)")
        if config is None or not config.get("ckpt_path"):
            return
        path = self._resolve_checkpoint(subcommand, config)
        if path is None:
            config.ckpt_path = None
            return
        self.checkpoint = read_checkpoint(path)
        self.checkpoint_path = path
        defaults = self._checkpoint_defaults(self.checkpoint, path)
        if defaults:
            self._subcommand_parsers[subcommand].set_defaults(defaults)
            default_data = defaults.get("data", {}).get("class_path", DEFAULT_DATA)
            try:
                self.config = self._parse(self.parser, default_data)
            except ArgumentError as err:
                raise UserInputError(self._explain(err)) from err
        self.config[subcommand].ckpt_path = str(path)
        self._report_model_differences(self.config[subcommand], defaults.get("model"))

    def _resolve_checkpoint(self, subcommand: str, config: Namespace) -> Path | None:
        given = str(config.ckpt_path)
        if given not in ("last", "best"):
            return Path(given)
        name = run_name(config)
        try:
            return runs.find_checkpoint(config.trainer.default_root_dir or RUN_ROOT, name, given)
        except UserInputError:
            if subcommand == "fit" and given == "last":  # as in Lightning: nothing to resume
                self.notes.append(f"note: no earlier run of {name} to resume; starting a new one")
                return None
            raise

    @staticmethod
    def _checkpoint_defaults(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
        hparams = dict(checkpoint.get("hyper_parameters") or {})
        hparams.pop("_instantiator", None)
        class_path = hparams.pop("_class_path", None)
        defaults: dict[str, Any] = {}
        if class_path:
            init_args = {k: _plain(v) for k, v in hparams.items() if k not in LINKED}
            defaults["model"] = {"class_path": class_path, "init_args": init_args}
            resolve_class(defaults["model"], "task", f"checkpoint {path}")
        run_dir = runs.run_dir_of_checkpoint(path)
        if run_dir is not None:
            data = (yaml.safe_load((run_dir / runs.CONFIG).read_text()) or {}).get("data")
            if isinstance(data, dict) and data.get("class_path"):
                resolve_class(data, "data", f"{run_dir / runs.CONFIG}: its data")
                defaults["data"] = data
        return defaults

    def _report_model_differences(self, config: Namespace, saved: dict[str, Any] | None) -> None:
        if saved is None or rank_zero_only.rank != 0:
            return
        model = config.model
        used = _plain(model.get("init_args") or {})
        differences = [f"{key}={used[key]!r} (checkpoint: {value!r})"
                       for key, value in saved["init_args"].items()
                       if key in used and used[key] != value]
        if model.class_path != saved["class_path"]:
            differences.insert(0, f"{model.class_path} (checkpoint: {saved['class_path']})")
        if differences:  # said once the command is known to run (a refusal says only why)
            self.notes.append(f"note: the command's model differs from the checkpoint's: "
                              f"{'; '.join(differences)}")

    # -- the run directory --------------------------------------------------------------------

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand]
        root = Path(config.trainer.default_root_dir or RUN_ROOT)
        name = run_name(config)
        rank = rank_zero_only.rank
        inherited = os.environ.get(RUN_DIR_VARIABLE) if rank != 0 else None
        resumed = (self.subcommand == "fit" and self.checkpoint_path is not None
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
        loggers = config.trainer.logger
        for logger in loggers if isinstance(loggers, list) else [loggers]:
            init_args = getattr(logger, "init_args", None)
            if init_args is None:
                continue
            if init_args.get("save_dir") in (None, str(root), RUN_ROOT):
                init_args.save_dir = str(self.run_dir)
            kind = str(logger.class_path)
            if kind.endswith(("CSVLogger", "TensorBoardLogger")) and init_args.get("name") in (
                    None, "lightning_logs"):
                init_args.name = "logs"
            if kind.endswith("WandbLogger"):
                if init_args.get("id") is None:
                    init_args.id = self.run_dir.name
                # Offline, checkpoints stay in the run directory instead of being copied into
                # W&B's staging area for a later sync ("all" still logs every one).
                if wandb_offline() and init_args.get("log_model") is True:
                    init_args.log_model = False

    def instantiate_trainer(self, **kwargs: Any) -> Trainer:
        trainer = self._get(self.config_init, "trainer", default={})
        if not trainer.get("plugins"):
            kwargs.setdefault("plugins", [AtomicCheckpointIO()])
        # under --predictions.stdout true, standard output is the CSV alone
        csv_out = getattr(self._get(self.config_init, "predictions"), "stdout", False)
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
            self.datamodule.setup(self.subcommand)  # bad data is refused before the run starts
        self._configure_checkpoints()
        if rank_zero_only.rank != 0:
            return
        runs.lock_run_dir(self.run_dir)
        for logger in self.trainer.loggers:
            if isinstance(logger, WandbLogger):
                # Lightning passes anonymous=None, which wandb 0.31 warns about at every start.
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

    def _run_subcommand(self, subcommand: str) -> None:
        try:
            super()._run_subcommand(subcommand)
        except FloatingPointError as err:
            stage = "training" if subcommand == "fit" else subcommand
            where = training_position(self.trainer)
            message = str(err) if where in str(err) else f"{err} (at {where})"
            raise TrainingStopped(f"{stage} stopped: {message}") from err
        finally:
            os.environ.pop(RUN_DIR_VARIABLE, None)

    def after_fit(self) -> None:
        checkpoint = self.trainer.checkpoint_callback
        best = checkpoint.best_model_path if checkpoint is not None else ""
        self.trainer.test(self.model, datamodule=self.datamodule, ckpt_path=best or None)
