"""Checks and readings of a training command's input before anything runs: config files,
weights to evaluate, the run's name, a checkpoint's model and data as defaults, the loggers'
folders.

Plain functions of the parsed configuration (a jsonargparse ``Namespace``), used by
``lightning_cli.PnodeCLI``; each refusal is one ``UserInputError`` sentence.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from jsonargparse import Namespace

from pnode_zoo import runs
from pnode_zoo.cli.console import wandb_offline
from pnode_zoo.errors import UserInputError
from pnode_zoo.hub.classes import resolve_class

__all__ = ["LINKED", "check_config_files", "checkpoint_defaults", "model_differences",
           "place_loggers", "plain", "require_weights", "run_name"]

LINKED = ("num_classes", "input_shape", "times", "irregular")  # model options the data sets


def check_config_files(args: list[str]) -> None:
    """UserInputError for a ``--config`` file that is missing, empty, not YAML or not a mapping.

    jsonargparse reports these as "Unexpected config" or a YAML parser trace without the
    file's name; here each is one sentence naming the file (and the line, for YAML errors).

    Args:
        args: the command line after the subcommand.
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


def run_name(config: Namespace) -> str:
    """What a run trains, as a folder name: ``<data>-<arch>``, e.g. ``gunpoint-odenet1d`` (or
    ``<data>-<pretrained name>`` for a run started from pretrained weights).

    The data part is the data module's ``name`` option where it has one (UCR/UEA and forecast
    sets), else its class name without ``DataModule``.

    Args:
        config: the parsed configuration.
    """
    data, model = config.get("data"), config.get("model")
    data_args = (data.get("init_args") or {}) if data else {}
    data_part = data_args.get("name") or str(data.class_path).rsplit(".", 1)[-1].removesuffix(
        "DataModule") if data else "nodata"
    model_args = model.get("init_args") or {}
    model_part = (model_args.get("pretrained") or model_args.get("arch")
                  or str(model.class_path).rsplit(".", 1)[-1])
    return re.sub(r"[^a-z0-9_.-]+", "_", f"{data_part}-{model_part}".lower())


def plain(value: Any) -> Any:
    """``value`` with Namespaces as dicts and tuples as lists, for comparing configurations."""
    if isinstance(value, Namespace):
        value = value.as_dict()
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v) for v in value]
    return value


def checkpoint_defaults(checkpoint: dict[str, Any], path: Path) -> dict[str, Any]:
    """The model a checkpoint's hyperparameters describe and, for a checkpoint in a run
    directory, that run's data module: defaults for the command's own options.

    Args:
        checkpoint: the checkpoint, read safely.
        path: where it was read from.
    """
    hparams = dict(checkpoint.get("hyper_parameters") or {})
    hparams.pop("_instantiator", None)
    class_path = hparams.pop("_class_path", None)
    defaults: dict[str, Any] = {}
    if class_path:
        init_args = {k: plain(v) for k, v in hparams.items() if k not in LINKED}
        defaults["model"] = {"class_path": class_path, "init_args": init_args}
        resolve_class(defaults["model"], "task", f"checkpoint {path}")
    run_dir = runs.run_dir_of_checkpoint(path)
    if run_dir is not None:
        data = (yaml.safe_load((run_dir / runs.CONFIG).read_text()) or {}).get("data")
        if isinstance(data, dict) and data.get("class_path"):
            resolve_class(data, "data", f"{run_dir / runs.CONFIG}: its data")
            defaults["data"] = data
    return defaults


def model_differences(config: Namespace, saved: dict[str, Any]) -> list[str]:
    """Where the command's model differs from a checkpoint's (``checkpoint_defaults``).

    Args:
        config: the command's parsed configuration.
        saved: the checkpoint's ``model`` default.
    """
    model = config.model
    used = plain(model.get("init_args") or {})
    differences = [f"{key}={used[key]!r} (checkpoint: {value!r})"
                   for key, value in saved["init_args"].items()
                   if key in used and used[key] != value]
    if model.class_path != saved["class_path"]:
        differences.insert(0, f"{model.class_path} (checkpoint: {saved['class_path']})")
    return differences


def place_loggers(loggers: Any, run_dir: Path, roots: tuple[str, ...]) -> None:
    """Point the configured loggers into the run directory: their files (unless the user chose
    another folder than one of ``roots``), CSV/TensorBoard's ``logs/``, W&B's run id.

    Args:
        loggers: ``trainer.logger`` of the parsed configuration (one, a list, or a bool).
        run_dir: the command's run directory.
        roots: the folders that mean "the default" (the run root).
    """
    for logger in loggers if isinstance(loggers, list) else [loggers]:
        init_args = getattr(logger, "init_args", None)
        if init_args is None:
            continue
        if init_args.get("save_dir") in (None, *roots):
            init_args.save_dir = str(run_dir)
        kind = str(logger.class_path)
        if kind.endswith(("CSVLogger", "TensorBoardLogger")) and init_args.get("name") in (
                None, "lightning_logs"):
            init_args.name = "logs"
        if kind.endswith("WandbLogger"):
            if init_args.get("id") is None:
                init_args.id = run_dir.name
            # Offline, checkpoints stay in the run directory instead of being copied into
            # W&B's staging area for a later sync ("all" still logs every one).
            if wandb_offline() and init_args.get("log_model") is True:
                init_args.log_model = False
