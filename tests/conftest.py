"""Shared fixtures and hooks (the helpers themselves are in clitools.py)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import torch
from clitools import missing_data, run_cli

from pnode_zoo.cli import main


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """One torch thread in the test process too (see clitools.cli_env: the suite's processes
    share the cores, and the tensors of most tests are tiny)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

@pytest.fixture
def cli(tmp_path: Path):
    """Call as ``cli(args, env=None)``; runs ``python -m pnode_zoo`` in a fresh temporary
    directory."""
    return lambda args, env=None: run_cli(args, tmp_path, env)


@pytest.fixture
def cli_here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture):
    """Like ``cli``, but in this process (a second process costs seconds of imports per call),
    for commands that start no other process. Returns a CompletedProcess."""
    for variable in [v for v in os.environ if v.startswith(("WANDB_", "PNODE_ZOO_"))]:
        monkeypatch.delenv(variable)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def run(args: list[str]) -> subprocess.CompletedProcess:
        environment = dict(os.environ)  # Lightning and W&B set variables of their own
        deterministic = torch.are_deterministic_algorithms_enabled()
        threads = torch.get_num_threads()
        code = 0
        try:
            main(args)
        except SystemExit as exit:
            code = exit.code
        finally:
            os.environ.clear()
            os.environ.update(environment)
            torch.use_deterministic_algorithms(deterministic)
            torch.set_num_threads(threads)
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    return run


#: The files that take longest (a minute or more of a 2-core run each), started first: CI hands
#: whole files to the workers (``--dist loadfile``) in collection order, so a long file that
#: starts last keeps one worker busy after the other has finished.
LONGEST_FIRST = ("test_readme.py", "test_launch.py", "test_resume.py", "test_cli.py",
                 "test_hub.py", "test_predict.py", "test_failure.py", "test_wandb_logging.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The files of ``LONGEST_FIRST`` first, in that order; every file's tests keep theirs."""
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """``skipif`` marks whose reason says "files absent" go through ``missing_data``."""
    for mark in item.iter_markers("skipif"):
        reason = mark.kwargs.get("reason", "")
        if mark.args and mark.args[0] is True and "files absent" in reason:
            missing_data(reason)
@pytest.fixture(scope="session")
def pnode():
    """``run_cli`` itself, for runs in folders a test chooses (e.g. shared by a module)."""
    return run_cli
