"""``python -m pnode_zoo``: LightningCLI's fit | validate | test | predict, plus ``models``.

Lightning is imported only for the training subcommands, so ``--help`` and ``models`` answer
at once. Mistakes in the user's input end with one line on stderr and exit status 2.
"""

from __future__ import annotations

import inspect
import netrc
import os
import sys
from pathlib import Path

USAGE = """\
usage: python -m pnode_zoo {fit,validate,test,predict,models,dashboard} ...

pnode_zoo: a model zoo of parallel-in-time (parareal) neural ODEs on PyTorch Lightning.

subcommands:
  fit        train a model (no arguments: the default NODE on scikit-learn's 8x8 digits),
             then test the best checkpoint
  validate   evaluate on the validation split (--ckpt_path to pick weights)
  test       evaluate on the test split (--ckpt_path to pick weights)
  predict    predict the test split (--ckpt_path to pick weights)
  models     list the registered models; `models NAME` shows one model's options
  dashboard  build the W&B workspace of the zoo's panels: dashboard --entity E --project P
             (offline: write its definition to a file)

`python -m pnode_zoo fit --help` lists every option with its documentation;
`--config configs/<task>/<model>.yaml` loads a configuration, `--print_config` shows one.
Set PNODE_ZOO_DEBUG=1 to see full tracebacks.
"""


class UserInputError(Exception):
    """A mistake in what the user asked for; reported as one line, never a traceback."""


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


def run_lightning(args: list[str] | None) -> None:
    """Run a LightningCLI subcommand (None: read sys.argv); user mistakes become UserInputError."""
    from jsonargparse import ArgumentError

    from pnode_zoo.lightning_cli import PnodeCLI

    try:
        PnodeCLI(args=args)
    except ArgumentError as err:
        raise UserInputError(f"{err} (see `python -m pnode_zoo fit --help`)") from err


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m pnode_zoo`` and the ``pnode-zoo`` script."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in ("-h", "--help"):
        print(USAGE)
        return
    try:
        if args[0] == "models":
            models_command(args[1:])
        elif args[0] == "dashboard":
            from pnode_zoo.dashboard import dashboard_command

            dashboard_command(args[1:])
        else:
            run_lightning(argv)
    except UserInputError as err:
        if os.environ.get("PNODE_ZOO_DEBUG"):
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
