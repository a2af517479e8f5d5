"""``python -m pnode_zoo``: the one entry point and its subcommands.

fit | validate | test | predict are LightningCLI's (``lightning_cli.PnodeCLI``, imported only for
them, so ``--help`` and ``models`` answer at once); ``models``, ``pretrained``, ``export`` and
``dashboard`` are jsonargparse subcommands of the same parser that lists them all. How a
command ends (one ``error:`` line for a user's mistake, a traceback for a bug) is
``console.report_errors``.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable

from jsonargparse import ArgumentError, ArgumentParser, Namespace

from pnode_zoo.cli.commands import (
    PRETRAINED_ACTIONS,
    PROG,
    add_pretrained_actions,
    export_command,
    export_parser,
    models_command,
    models_parser,
    pretrained_command,
    pretrained_parser,
)
from pnode_zoo.cli.console import debugging, report_errors
from pnode_zoo.cli.dashboard import dashboard_command, dashboard_parser
from pnode_zoo.cli.messages import explain_argument_error
from pnode_zoo.errors import UserInputError

__all__ = ["COMMANDS", "PROG", "TRAINING", "build_parser", "main"]

#: what `fit --help` (and the others') prints, said in their description
CLASS_HELP = ("This help lists the config, seed and trainer options, and --model and --data by "
              "class name only: `--model.help CLASS` and `--data.help CLASS` print a class's own "
              "options (e.g. --model.help Classifier, --data.help UCRDataModule), and "
              "--print_config the whole configuration the command would run.")
WEIGHTS = ("weights: --ckpt_path PATH|last|best or --model.pretrained NAME; --untrained true "
           "evaluates fresh ones")
#: the training subcommands: name -> summary in `--help` (their description adds CLASS_HELP)
TRAINING = {
    "fit": "train a model (no options: the default parareal ODE-Net on scikit-learn's 8x8 "
           "digits), then test its best checkpoint",
    "validate": f"evaluate on the validation split ({WEIGHTS})",
    "test": "evaluate on the test split (weights as for validate)",
    "predict": "predict the test split into the run's predictions.csv (weights as for validate; "
               "--predictions.stdout true prints the CSV alone)",
}
#: the other subcommands: name -> (summary in `--help`, its parser, its handler)
COMMANDS: dict[str, tuple[str, Callable[[], ArgumentParser], Callable[[Namespace], None]]] = {
    "models": ("list the registered models; `models NAME` shows one model's options",
               models_parser, models_command),
    "pretrained": ("pretrained weights: `pretrained list [PATTERN]`, `show NAME` (its card), "
                   "`eval NAME|DIR` (reproduce its test metric)",
                   pretrained_parser, pretrained_command),
    "export": ("turn a Lightning checkpoint into a pretrained directory (config.json + "
               "model.safetensors + SHA256SUMS): export CKPT DIR [--name NAME]",
               export_parser, export_command),
    "dashboard": ("build the W&B workspace of the zoo's panels: dashboard --entity E --project P "
                  "(offline: write its definition to a file)", dashboard_parser,
                  dashboard_command),
}
EPILOG = ("`python -m pnode_zoo SUBCOMMAND --help` shows a subcommand's options. "
          "`--config configs/<task>/<model>.yaml` loads a configuration. Each command writes "
          "into its own run directory, runs/<data>-<model>/<id>/. Set PNODE_ZOO_DEBUG=1 to see "
          "full tracebacks and every library message.")


def build_parser() -> ArgumentParser:
    """The parser of ``python -m pnode_zoo``.

    The training subcommands are listed for ``--help`` only: ``main`` hands their options to
    LightningCLI.
    """
    parser = ArgumentParser(prog=PROG, exit_on_error=False, epilog=EPILOG,
                            description="pnode_zoo: a model zoo of parallel-in-time (parareal) "
                                        "neural ODEs on PyTorch Lightning.")
    subcommands = parser.add_subcommands(dest="subcommand")
    for name, summary in TRAINING.items():
        subcommands.add_subcommand(name, ArgumentParser(), help=summary)
    for name, (summary, make_parser, _) in COMMANDS.items():
        command = make_parser()
        subcommands.add_subcommand(name, command, help=summary)
        if name == "pretrained":
            add_pretrained_actions(command)
    return parser


def _command_parser(words: list[str]) -> tuple[str, ArgumentParser]:
    """The command words (``pretrained eval``) at the start of ``words`` and their parser."""
    if words[:1] == ["pretrained"] and words[1:2] and words[1] in PRETRAINED_ACTIONS:
        return f"pretrained {words[1]}", PRETRAINED_ACTIONS[words[1]][1]()
    if words[:1] == ["pretrained"]:
        parser = pretrained_parser()
        add_pretrained_actions(parser)
        return "pretrained", parser
    if words[:1] and words[0] in COMMANDS:
        return words[0], COMMANDS[words[0]][1]()
    return "", build_parser()


def _run_training(subcommand: str, args: list[str]) -> None:
    if not debugging():
        os.environ.setdefault("WANDB_SILENT", "true")  # prepare_wandb says the one line needed
        os.environ.setdefault("WANDB_CONSOLE", "off")  # no copy of the terminal (and its ANSI
        # codes) in W&B's files
    from pnode_zoo.cli.lightning_cli import run

    summary = TRAINING[subcommand]
    run(subcommand, args, f"{summary[0].upper()}{summary[1:]}. {CLASS_HELP}")


def _run_command(args: list[str]) -> None:
    try:
        config = build_parser().parse_args(args)
    except ArgumentError as err:
        command, parser = _command_parser([word for word in args if not word.startswith("-")])
        usage = parser.format_usage().strip()  # a subcommand's lists its options
        hint = f"; {usage}" if command else f" (see `{PROG} --help`)"
        options = re.findall(r"--[\w.-]+", usage)
        raise UserInputError(f"{explain_argument_error(str(err), options)}{hint}") from err
    COMMANDS[config.subcommand][2](config[config.subcommand])


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m pnode_zoo`` and the ``pnode-zoo`` script.

    Args:
        argv: the command line after the program name (default: ``sys.argv[1:]``).
    """
    args = sys.argv[1:] if argv is None else list(argv)
    if not args:
        print(build_parser().format_help(), end="")
    elif args[0] in TRAINING:
        report_errors(lambda: _run_training(args[0], args[1:]))
    else:
        report_errors(lambda: _run_command(args))
