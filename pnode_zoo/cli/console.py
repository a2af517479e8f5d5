"""The bottom of the command line: how a command ends, what the terminal shows, W&B's mode.

Every other module of ``pnode_zoo.cli`` may import this one; it imports none of them (and no
Lightning), so ``--help`` and ``models`` stay fast. User mistakes are ``UserInputError``
(``pnode_zoo.errors``): one ``error:`` line, exit status 2. A numerical stop is
``TrainingStopped``: one line, exit status 1. Any other exception is a bug: its traceback, then
one line asking to report it, exit status 1.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

from pnode_zoo.errors import UserInputError

__all__ = ["REPORT", "TrainingStopped", "finish_wandb", "prepare_wandb", "quiet", "report_errors",
           "user_error", "wandb_has_api_key", "wandb_offline"]

#: where a bug is reported (the last line after an unexpected exception's traceback)
REPORT = ("this is a bug in pnode_zoo, not in your input: please report it with the traceback "
          "above and the command that raised it")
DEBUG_VARIABLE = "PNODE_ZOO_DEBUG"  # set: full tracebacks and every library message


class TrainingStopped(Exception):
    """Training or evaluation stopped on a numerical failure; one line and exit status 1."""


def debugging() -> bool:
    """Whether ``PNODE_ZOO_DEBUG`` asks for every traceback and library message."""
    return bool(os.environ.get(DEBUG_VARIABLE))


def user_error(err: BaseException | None) -> UserInputError | None:
    """The UserInputError in an exception's chain (jsonargparse wraps what a constructor
    raised), or None: then it is a bug, not the user's mistake.

    Args:
        err: the exception raised.
    """
    while err is not None:
        if isinstance(err, UserInputError):
            return err
        err = err.__cause__ or err.__context__
    return None


def report_errors(command: Callable[[], None]) -> None:
    """Run ``command``; end a user mistake or a numerical stop in one ``error:`` line, a bug in
    its traceback and a request to report it (``PNODE_ZOO_DEBUG=1``: every traceback).

    Args:
        command: what the subcommand does.
    """
    try:
        command()
    except (UserInputError, TrainingStopped) as err:
        if debugging():
            raise
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2 if isinstance(err, UserInputError) else 1)
    except Exception as err:  # a bug: the traceback to report, and what to do with it
        traceback.print_exc()
        while err.__cause__ or err.__context__:  # the first raised (jsonargparse wraps it)
            err = err.__cause__ or err.__context__
        print(f"error: {type(err).__name__}: {REPORT}", file=sys.stderr)
        sys.exit(1)


def quiet() -> None:
    """Keep the terminal to what a user acts on: no tips or start-up chatter.

    Lightning's informational lines (seed, accelerators, tips, checkpoint restoring) and the
    named warnings below are hidden; every other warning, deprecations included, shows.
    ``PNODE_ZOO_DEBUG=1`` shows everything.
    """
    if debugging():
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


def wandb_has_api_key() -> bool:
    """True when W&B can authenticate: WANDB_API_KEY or an api.wandb.ai entry in ~/.netrc."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_offline() -> bool:
    """Whether W&B will not reach its server: ``WANDB_MODE`` offline or disabled, or no mode
    and no API key (``prepare_wandb`` then goes offline)."""
    mode = os.environ.get("WANDB_MODE")
    if mode is None:
        return not wandb_has_api_key()
    return mode in ("offline", "dryrun", "disabled")


def prepare_wandb(run_dir: str) -> None:
    """Keep W&B's files under the run directory and go offline (saying so) without a key.

    Args:
        run_dir: the command's run directory.
    """
    wandb_dir = Path(run_dir).absolute()
    for variable, sub in [("WANDB_DIR", ""), ("WANDB_CACHE_DIR", ".wandb-cache"),
                          ("WANDB_CONFIG_DIR", ".wandb-config"), ("WANDB_DATA_DIR", ".wandb-data")]:
        os.environ.setdefault(variable, str(wandb_dir / sub))
        Path(os.environ[variable]).mkdir(parents=True, exist_ok=True)
    if "WANDB_MODE" not in os.environ and not wandb_has_api_key():
        os.environ["WANDB_MODE"] = "offline"
        print(f"W&B: no API key found, logging offline under {wandb_dir}/wandb "
              "(upload later with `wandb sync`).", file=sys.stderr)


def finish_wandb(succeeded: bool) -> None:
    """End the W&B run a command opened, if any, so that a second command in the same process
    (``main`` called again, as a notebook would) starts a run of its own instead of logging
    into this one.

    Args:
        succeeded: whether the command ended normally (W&B records the exit code).
    """
    wandb = sys.modules.get("wandb")  # never imported here: only a run that used it ends it
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=0 if succeeded else 1)
