"""Every command in the README and the docs pages works as written: each line of a ```bash block
runs, in order (README first, then docs/*.md), in one fresh folder (fits shortened by appended
options), and every ```python block runs.

Commands that cannot run inside the suite are listed in NOT_RUN_HERE with the test or script
that runs them instead; any other command that is not `python -m pnode_zoo ...` or
`torchrun ...` fails this test, so a new kind of command has to be placed here on purpose.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from clitools import DOC_PAGES, REPO, TIMEOUT, cli_env

# Appended to every fit/validate/test/predict: the README's commands as written, but short.
SHORTEN = ["--trainer.max_epochs=1", "--trainer.limit_train_batches=2",
           "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
           "--trainer.limit_predict_batches=1"]
TRAINING = {"fit", "validate", "test", "predict"}
NOT_RUN_HERE = {  # how a command starts -> where it is run instead
    "python3 -m venv": ".ci/run (the install)",
    ". .venv/bin/activate": ".ci/run (the install)",
    "pip install": ".ci/run (the install)",
    "ruff check": ".ci/run (the test command itself)",
    "python -m pytest": ".ci/run (the test command itself)",
}
TEMPLATES = {  # a placeholder in a command -> the test that runs the command it stands for
    "HOST0": "tests/distributed/test_launch.py::test_two_nodes_rendezvous_through_c10d_and_match"
             "_one_process (127.0.0.1 for HOST0, a free port)",
}


def blocks(language: str) -> list[str]:
    """The contents of the fenced blocks of ``language`` of the README and the docs pages, in
    order."""
    return [block for page in DOC_PAGES
            for block in re.findall(rf"^```{language}\n(.*?)^```", page.read_text(),
                                    flags=re.M | re.S)]


def bash_commands() -> list[str]:
    """Each command of the ```bash blocks: continuation lines joined, ``&&`` chains split,
    comments dropped; a command that two pages give is listed (and run) once."""
    commands = []
    for block in blocks("bash"):
        for line in block.replace("\\\n", " ").splitlines():
            words = shlex.split(line, comments=True)
            while words:
                end = words.index("&&") if "&&" in words else len(words)
                commands.append(shlex.join(words[:end]))
                words = words[end + 1:]
    return list(dict.fromkeys(commands))


def _argv(command: str) -> list[str] | None:
    """The command as run here (``python``: this interpreter; fits shortened), or None if it
    is run elsewhere (see NOT_RUN_HERE and TEMPLATES)."""
    if command.startswith(tuple(NOT_RUN_HERE)) or any(t in command for t in TEMPLATES):
        return None
    words = shlex.split(command)
    if words[:3] == ["python", "-m", "pnode_zoo"]:
        argv, subcommand = [sys.executable, *words[1:]], words[3:4]
    elif words[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", *words[1:]]
        subcommand = words[words.index("pnode_zoo") + 1:][:1]
    else:
        pytest.fail(f"README command {command!r} is neither run here nor listed in "
                    "tests/test_readme.py's NOT_RUN_HERE with where it runs")
    helps = {"--help", "-h", "--print_config"}
    if subcommand and subcommand[0] in TRAINING and not helps & set(words) and not any(
            w.endswith(".help") for w in words):
        argv += SHORTEN
    return argv


def test_the_readme_has_commands_of_every_kind() -> None:
    commands = bash_commands()
    assert any(c.startswith("python -m pnode_zoo fit") for c in commands)
    assert any(c.startswith("python -m pnode_zoo test") for c in commands)
    assert any(c.startswith("python -m pnode_zoo predict") for c in commands)
    assert any(c.startswith("torchrun") for c in commands)
    for command in commands:
        assert not re.search(r"\.\.\.|<[a-z_]+>", command), (
            f"README command {command!r} has a placeholder: write one that runs")


def test_ci_runs_the_readmes_test_commands_as_written() -> None:
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    for command in bash_commands():
        if command.startswith(("ruff check", "python -m pytest")):
            assert command in ci, f"README command {command!r} is not a line of .ci/run"


def _in_this_process(argv: list[str]) -> bool:
    """Whether the command runs in the test's process: any ``python -m pnode_zoo`` command but
    one that launches processes (Lightning's launcher re-runs ``sys.argv``: pytest's here)."""
    return argv[1:3] == ["-m", "pnode_zoo"] and not any(
        word.startswith("--trainer.devices") for word in argv)


@pytest.mark.slow
def test_every_readme_command_runs(tmp_path: Path, cli_here) -> None:
    """Commands that start no process run in this one (``cli_here``: the same ``main`` that
    ``python -m pnode_zoo`` calls, without the seconds of imports a process costs each; one
    command after another in one process, as a notebook would call ``main``)."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    env = cli_env(tmp_path)
    ran = 0
    for command in bash_commands():
        argv = _argv(command)
        if argv is None:
            continue
        if _in_this_process(argv):
            result = cli_here(argv[3:])
        else:
            result = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                                    timeout=TIMEOUT)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
        assert "Traceback" not in result.stderr, f"{command}\n{result.stderr[-3000:]}"
        ran += 1
    assert ran >= 8


@pytest.mark.slow
@pytest.mark.parametrize("number", range(len(blocks("python"))))
def test_every_readme_python_block_runs(tmp_path: Path, number: int) -> None:
    code = blocks("python")[number]
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=cli_env(tmp_path),
                            capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{code}\n{result.stderr[-3000:]}"
