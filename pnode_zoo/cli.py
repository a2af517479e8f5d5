"""``python -m pnode_zoo``: LightningCLI's fit | validate | test | predict, plus ``models``,
``pretrained`` and ``export``.

Lightning is imported only for the training subcommands, so ``--help`` and ``models`` answer
at once. Mistakes in the user's input (``UserInputError``) end with one line on stderr and exit
status 2; any other exception is a bug: its traceback, then one line asking to report it.
"""

from __future__ import annotations

import inspect
import netrc
import os
import sys
import textwrap
import traceback
from collections.abc import Callable
from pathlib import Path

from pnode_zoo.errors import UserInputError

#: where a bug is reported (the last line after an unexpected exception's traceback)
REPORT = ("this is a bug in pnode_zoo, not in your input: please report it with the traceback "
          "above and the command that raised it")


class TrainingStopped(Exception):
    """Training or evaluation stopped on a numerical failure; one line and exit status 1."""


def models_command(args: list[str]) -> None:
    """Print the registry, or the options of one model (its docstring's Args)."""
    from pnode_zoo.models import list_models, model_entry

    if not args:
        for name in list_models():
            summary = (inspect.getdoc(model_entry(name)) or "").splitlines()[0]
            print(f"{name:<24} {summary}")
        return
    try:
        entry = model_entry(args[0])
    except ValueError as err:
        raise UserInputError(str(err)) from err
    print(f"{args[0]}{inspect.signature(entry)}\n\n{inspect.getdoc(entry)}")


def wandb_has_api_key() -> bool:
    """True when W&B can authenticate: WANDB_API_KEY or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def prepare_wandb(run_dir: str) -> None:
    """Keep W&B's files under the run directory and go offline (saying so) without a key."""
    wandb_dir = Path(run_dir).absolute()
    for variable, sub in [("WANDB_DIR", ""), ("WANDB_CACHE_DIR", ".wandb-cache"),
                          ("WANDB_CONFIG_DIR", ".wandb-config"), ("WANDB_DATA_DIR", ".wandb-data")]:
        os.environ.setdefault(variable, str(wandb_dir / sub))
        Path(os.environ[variable]).mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" not in os.environ and not wandb_has_api_key():
        os.environ["WANDB_MODE"] = "offline"
        print(f"W&B: no API key found, logging offline under {wandb_dir}/wandb "
              "(upload later with `wandb sync`).", file=sys.stderr)


def run_lightning(subcommand: str, args: list[str]) -> None:
    """Run a LightningCLI subcommand; user mistakes surface as UserInputError.

    Args:
        subcommand: fit, validate, test or predict.
        args: the options after the subcommand.
    """
    if not os.environ.get("PNODE_ZOO_DEBUG"):
        os.environ.setdefault("WANDB_SILENT", "true")  # prepare_wandb says the one line needed
        os.environ.setdefault("WANDB_CONSOLE", "off")  # no copy of the terminal (and its ANSI
        # codes) in W&B's files
    from pnode_zoo.lightning_cli import PnodeCLI

    PnodeCLI([subcommand, *args])


def dashboard_command(args: list[str]) -> None:
    """``dashboard``: the W&B workspace (imported on use: it needs wandb-workspaces)."""
    from pnode_zoo.dashboard import dashboard_command as build

    build(args)


def _pretrained(handler: str) -> Callable[[list[str]], None]:
    """A handler of ``pretrained_commands`` (imported on use)."""

    def run(args: list[str]) -> None:
        from pnode_zoo import pretrained_commands

        getattr(pretrained_commands, handler)(args)

    return run


def _lightning(subcommand: str) -> Callable[[list[str]], None]:
    return lambda args: run_lightning(subcommand, args)


# The subcommands, in the order `--help` lists them: name -> (summary, handler of the options
# that follow the name). Handlers import what they need, so `--help` stays fast.
SUBCOMMANDS: dict[str, tuple[str, Callable[[list[str]], None]]] = {
    "fit": ("train a model (no options: the default parareal ODE-Net on scikit-learn's 8x8 "
            "digits), then test its best checkpoint", _lightning("fit")),
    "validate": ("evaluate on the validation split (weights: --ckpt_path PATH|last|best or "
                 "--model.pretrained NAME; --untrained true evaluates fresh ones)",
                 _lightning("validate")),
    "test": ("evaluate on the test split (weights as for validate)", _lightning("test")),
    "predict": ("predict the test split into the run's predictions.csv (weights as for "
                "validate; --predictions.stdout true prints the CSV alone)",
                _lightning("predict")),
    "models": ("list the registered models; `models NAME` shows one model's options",
               models_command),
    "pretrained": ("pretrained weights: `pretrained list [PATTERN]`, `show NAME` (its card), "
                   "`eval NAME|DIR` (reproduce its test metric)",
                   _pretrained("pretrained_command")),
    "export": ("turn a Lightning checkpoint into a pretrained directory (config.json + "
               "model.safetensors + SHA256SUMS): export CKPT DIR [--name NAME]",
               _pretrained("export_command")),
    "dashboard": ("build the W&B workspace of the zoo's panels: dashboard --entity E --project P "
                  "(offline: write its definition to a file)", dashboard_command),
}


def usage() -> str:
    """The text of ``python -m pnode_zoo --help``."""
    lines = [
        f"usage: python -m pnode_zoo {{{','.join(SUBCOMMANDS)}}} ...",
        "",
        "pnode_zoo: a model zoo of parallel-in-time (parareal) neural ODEs on PyTorch Lightning.",
        "",
        "subcommands:",
    ]
    lines += [textwrap.fill(summary, 92, initial_indent=f"  {name:<10} ",
                            subsequent_indent=" " * 13)
              for name, (summary, _) in SUBCOMMANDS.items()]
    lines += [
        "",
        "`python -m pnode_zoo fit --help` lists the config, seed and trainer options and",
        "--model/--data by class; `--model.help CLASS` and `--data.help CLASS` show a class's.",
        "`--config configs/<task>/<model>.yaml` loads a configuration, `--print_config` shows one.",
        "Each command writes into its own run directory, runs/<data>-<model>/<id>/.",
        "Set PNODE_ZOO_DEBUG=1 to see full tracebacks and every library message.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m pnode_zoo`` and the ``pnode-zoo`` script."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return
    from pnode_zoo.suggest import did_you_mean

    try:
        if args[0] not in SUBCOMMANDS:
            raise UserInputError(f"unknown subcommand {args[0]!r}"
                                 f"{did_you_mean(args[0], SUBCOMMANDS)}; see "
                                 "`python -m pnode_zoo --help`")
        SUBCOMMANDS[args[0]][1](args[1:])
    except (UserInputError, TrainingStopped) as err:
        if os.environ.get("PNODE_ZOO_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2 if isinstance(err, UserInputError) else 1)
    except Exception as err:  # a bug: the traceback to report, and what to do with it
        traceback.print_exc()
        while err.__cause__ or err.__context__:  # the first raised (jsonargparse wraps it)
            err = err.__cause__ or err.__context__
        print(f"error: {type(err).__name__}: {REPORT}", file=sys.stderr)
        sys.exit(1)
