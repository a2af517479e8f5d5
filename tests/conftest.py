"""Shared fixtures: run the CLI in a subprocess (Lightning's launchers re-run sys.argv)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run_cli(args: list[str], cwd: Path, env: dict[str, str | None] | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """``python -m pnode_zoo ARGS`` in ``cwd``, W&B offline and out of the home folder.

    ``env`` entries override the environment; a None value removes the variable.
    """
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    full_env.update({"HOME": str(cwd), "WANDB_MODE": "offline", "PYTHONHASHSEED": "0"})
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return subprocess.run(
        [sys.executable, "-m", "pnode_zoo", *args], cwd=cwd, env=full_env, capture_output=True,
        text=True, timeout=timeout,
    )


@pytest.fixture
def cli(tmp_path: Path):
    """Call as ``cli(args, env=None)``; runs in a fresh temporary directory."""
    return lambda args, env=None: run_cli(args, tmp_path, env)


@pytest.fixture(scope="session")
def pnode():
    """``run_cli`` itself, for runs in folders a test chooses (e.g. shared by a module)."""
    return run_cli
