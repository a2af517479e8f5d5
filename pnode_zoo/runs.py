"""Run directories: one per command, never shared, holding its config, checkpoints and logs.

Layout: ``ROOT/NAME/ID/`` (ROOT is ``--trainer.default_root_dir``, ``runs`` by default; NAME
says what was trained, e.g. ``digits-odenet_parareal``; ID is ``YYYYmmdd-HHMMSS-xxxxxx``, a
start time and a random suffix)::

    config.yaml                  the command's full configuration
    checkpoints/last.ckpt        the weights after the last finished epoch (the resume point)
    checkpoints/best-*.ckpt      the best weights by the validation metric, named with it
    logs/version_N/              CSV or TensorBoard logs (N counts resumptions)
    wandb/                       W&B's files (W&B's own folders stay in the run too)
    predictions.csv              what ``predict`` wrote

A directory is created with an exclusive ``mkdir``, so two commands started in the same second
still get two directories. The process that trains in a run holds an advisory lock on its
``.lock`` file; the kernel drops it when the process ends, however it ends, so a resumption can
tell a crashed run (resumable) from a running one (refused).

This module knows files only; the CLI decides when to create and lock.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import time
from pathlib import Path

from pnode_zoo.errors import UserInputError

__all__ = [
    "BEST_PREFIX",
    "CHECKPOINTS",
    "CONFIG",
    "LAST",
    "LOCK",
    "create_run_dir",
    "find_checkpoint",
    "is_run_dir",
    "lock_run_dir",
    "release_run_dirs",
    "new_run_id",
    "run_dir_of_checkpoint",
]

CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
BEST_PREFIX = "best-"  # best-<epoch>-<metric><value>.ckpt (training.checkpoints.best_and_last)
CONFIG = "config.yaml"
LOCK = ".lock"

_held_locks: list[int] = []  # descriptors kept open until the command ends (or the process)


def new_run_id() -> str:
    """A start time to the second and six random hex digits, e.g. ``20250101-120000-a1b2c3``."""
    return f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"


def create_run_dir(root: str | Path, name: str) -> Path:
    """Create and return a new, empty directory ``root/name/<id>`` that no other run shares.

    Args:
        root: folder of all runs.
        name: what the run trains (a folder under ``root``).
    """
    parent = Path(root) / name
    parent.mkdir(parents=True, exist_ok=True)
    while True:
        path = parent / new_run_id()
        try:
            path.mkdir()  # exclusive: fails if another run took the name first
        except FileExistsError:
            continue
        return path


def lock_run_dir(run_dir: Path) -> None:
    """Hold ``run_dir``'s lock until ``release_run_dirs`` or the end of this process; a
    UserInputError if another process holds it."""
    descriptor = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(descriptor)
        raise UserInputError(
            f"run {run_dir} is in use by another process; wait for it to end or resume from "
            "another checkpoint"
        ) from None
    os.ftruncate(descriptor, 0)
    os.write(descriptor, f"{os.getpid()}\n".encode())
    _held_locks.append(descriptor)


def release_run_dirs() -> None:
    """Release every run-directory lock this process holds (a command has ended, so a second
    command in the same process, ``main`` called again, may resume the run)."""
    while _held_locks:
        os.close(_held_locks.pop())


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` looks like a run directory (its config beside a checkpoints folder)."""
    return (path / CONFIG).is_file() and (path / CHECKPOINTS).is_dir()


def run_dir_of_checkpoint(checkpoint: Path) -> Path | None:
    """The run directory a checkpoint file lies in, or None if it lies elsewhere."""
    checkpoint = Path(checkpoint)
    if checkpoint.parent.name != CHECKPOINTS:
        return None
    run_dir = checkpoint.parent.parent
    return run_dir if is_run_dir(run_dir) else None


def find_checkpoint(root: str | Path, name: str, which: str) -> Path:
    """The ``last`` or ``best`` checkpoint of the most recently trained run called ``name``.

    "Most recently trained" is the run whose ``last.ckpt`` was written last; its best checkpoint
    is its ``best-*.ckpt`` (the newest, should the run keep several).

    Args:
        root: folder of all runs.
        name: the run name (see the module docstring).
        which: "last" or "best".
    """
    folder = Path(root) / name
    lasts = sorted(folder.glob(f"*/{CHECKPOINTS}/{LAST}"), key=lambda p: p.stat().st_mtime)
    if not lasts:
        raise UserInputError(
            f"--ckpt_path {which}: no run of {name!r} with a checkpoint under {folder}/; train "
            "one with `fit` first, or give a checkpoint's path"
        )
    if which == "last":
        return lasts[-1]
    bests = sorted(lasts[-1].parent.glob(f"{BEST_PREFIX}*.ckpt"), key=lambda p: p.stat().st_mtime)
    if not bests:
        raise UserInputError(
            f"--ckpt_path best: the newest run of {name!r}, {lasts[-1].parent.parent}, has no "
            f"{BEST_PREFIX}*.ckpt; use --ckpt_path last or give a checkpoint's path"
        )
    return bests[-1]
