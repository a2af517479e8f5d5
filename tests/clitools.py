"""Helpers of the tests: run the CLI in a subprocess (Lightning's launchers re-run sys.argv).

Everything a test starts runs in its own temporary folder with W&B offline and HOME there, so
two copies of the suite may run at once on one machine: no fixed ports (Lightning and torchrun
pick free ones; the gloo tests rendezvous through a file), no shared folders. Timeouts are
generous limits against hangs, not timing assertions.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pnode_zoo.data.images import FASHION_MNIST_SYSTEM_DIR

REPO = Path(__file__).resolve().parents[1]
#: why a test that needs the Fashion-MNIST files cannot run (``missing_data`` takes it)
FASHION_MNIST_ABSENT = (f"Fashion-MNIST files absent ({FASHION_MNIST_SYSTEM_DIR}: Debian package "
                        "dataset-fashion-mnist)")
TIMEOUT = 1200  # seconds; a loaded 2-core machine can take minutes for one training run
PNODE = [sys.executable, "-m", "pnode_zoo"]
#: the hand-written pages: their commands run (test_readme.py), their figures and file names
#: are checked (test_docs.py); docs/benchmarks/ is written by the benchmarks
DOC_PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# configs/digits/node_parareal.yaml's block at width 8 instead of 32: the same code paths in
# about a third of the time (float64 fits of the resumption and launch tests)
NARROW_DIGITS = ("--model.init_args.arch_args={width: 8, parareal: {num_slices: 4, coarse: euler,"
                 " fine: rk4, fine_steps: 1, tol: 1.0e-3, max_iters: 4, backward: unrolled}}")


def cli_env(cwd: Path, env: dict[str, str | None] | None = None) -> dict[str, str]:
    """The environment of a CLI run in ``cwd``: W&B offline and out of the home folder, one
    thread, temporary folders under ``cwd/.tmp`` (torchrun leaves its log folder behind, and a
    killed process cannot remove the two W&B makes at import).

    ``env`` entries override the environment; a None value removes the variable.
    """
    (cwd / ".tmp").mkdir(exist_ok=True)
    full_env = {k: v for k, v in os.environ.items() if not k.startswith(("WANDB_", "PNODE_ZOO_"))}
    # One thread per process: tests start several processes at once (ranks, concurrent runs, a
    # second copy of the suite), and oversubscribed cores make torch's spinning threads crawl
    # (a short fit took 55 s with two threads on a busy 2-core machine, 12 s with one).
    full_env.update({"HOME": str(cwd), "WANDB_MODE": "offline", "PYTHONHASHSEED": "0",
                     "OMP_NUM_THREADS": "1", "TMPDIR": str(cwd / ".tmp")})
    for key, value in (env or {}).items():
        if value is None:
            full_env.pop(key, None)
        else:
            full_env[key] = value
    return full_env


def run_cli(args: list[str], cwd: Path, env: dict[str, str | None] | None = None,
            timeout: float = TIMEOUT) -> subprocess.CompletedProcess:
    """``python -m pnode_zoo ARGS`` in ``cwd`` (see ``cli_env``)."""
    return subprocess.run([*PNODE, *args], cwd=cwd, env=cli_env(cwd, env), capture_output=True,
                          text=True, timeout=timeout)


def start_cli(args: list[str], cwd: Path, log: Path,
              env: dict[str, str | None] | None = None) -> subprocess.Popen:
    """``python -m pnode_zoo ARGS`` started in ``cwd``, stdout and stderr into ``log``."""
    with log.open("w") as out:
        return subprocess.Popen([*PNODE, *args], cwd=cwd, env=cli_env(cwd, env), stdout=out,
                                stderr=subprocess.STDOUT)


def run_dirs(cwd: Path, root: str = "runs") -> list[Path]:
    """The run directories under ``cwd/root`` (those holding a config.yaml), sorted."""
    return sorted(path.parent for path in cwd.glob(f"{root}/*/*/config.yaml"))


def read_metrics(path: Path) -> list[dict[str, str]]:
    """The rows of a CSVLogger metrics.csv."""
    with path.open() as file:
        return list(csv.DictReader(file))


def missing_data(reason: str) -> None:
    """Skip a test whose data files are absent; under CI (CI=true) fail it instead.

    CI installs every package the suite needs (.ci/run), so a skip there would hide a broken
    install.
    """
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must have this test's data: {reason}", pytrace=False)
    pytest.skip(reason)
