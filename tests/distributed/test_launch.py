"""`fit` across processes, as a user runs it: Lightning's launcher, torchrun, errors, failures.

Every run is a subprocess (Lightning's popen launcher re-runs sys.argv: inside pytest it would
re-run the test session). Runs are short (4 steps of the digits parareal ODE-Net) in float64,
where the time-parallel run must reproduce the one-process losses to 1e-8.
"""

from __future__ import annotations

import contextlib
import csv
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clitools import NARROW_DIGITS, PNODE, REPO, TIMEOUT, cli_env

CONFIG = str(REPO / "configs" / "digits" / "node_parareal.yaml")
FIT = ["fit", "--config", CONFIG, NARROW_DIGITS, "--trainer.accelerator=cpu",
       "--trainer.precision=64-true", "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
       "--trainer.limit_val_batches=2", "--trainer.limit_test_batches=3",
       "--trainer.log_every_n_steps=1", "--trainer.logger=CSVLogger",
       "--trainer.logger.save_dir=logs", "--trainer.logger.flush_logs_every_n_steps=1"]
TIME_PARALLEL = ["--trainer.strategy=time_parallel", "--trainer.devices=2"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
            "-m", "pnode_zoo"]
pytestmark = pytest.mark.slow


def _metrics(cwd: Path) -> tuple[list[float], float]:
    """Per-step training losses and the test accuracy of the run in ``cwd``."""
    (path,) = cwd.glob("logs/**/metrics.csv")
    rows = list(csv.DictReader(path.open()))
    losses = [float(r["train/loss_step"]) for r in rows if r.get("train/loss_step")]
    (accuracy,) = [float(r["test/acc"]) for r in rows if r.get("test/acc")]
    return losses, accuracy


def _run(command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    """``command`` in ``cwd``, W&B offline and HOME there (the ``cli`` fixture runs only PNODE)."""
    return subprocess.run(command, cwd=cwd, env=cli_env(cwd), capture_output=True, text=True,
                          timeout=TIMEOUT)


def _free_port() -> int:
    """A port no process listens on now (the OS picks it), for a rendezvous endpoint."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[list[float], float]:
    cwd = tmp_path_factory.mktemp("one_process")
    result = _run([*PNODE, *FIT], cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    return _metrics(cwd)


def _assert_matches(cwd: Path, reference: tuple[list[float], float]) -> None:
    losses, accuracy = _metrics(cwd)
    assert len(losses) == len(reference[0]) == 4
    assert losses == pytest.approx(reference[0], rel=0, abs=1e-8)
    assert accuracy == reference[1]


def test_lightning_launcher_matches_one_process(cli, tmp_path: Path, reference) -> None:
    result = cli([*FIT, *TIME_PARALLEL])
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_matches(tmp_path, reference)
    assert "sync_dist" not in result.stderr  # epoch-level values are reduced over the ranks
    (path,) = tmp_path.glob("logs/**/metrics.csv")
    header = path.read_text().splitlines()[0]
    for rank in (0, 1):  # RunMonitor, a default callback of the CLI
        assert f"time_parallel/rank{rank}/time_fine" in header
        assert f"time_parallel/rank{rank}/time_wait" in header


def test_torchrun_matches_one_process(tmp_path: Path, reference) -> None:
    strategy = ["--trainer.strategy=pnode_zoo.distributed.TimeParallelStrategy",
                "--trainer.strategy.time_parallel_size=2", "--trainer.devices=2"]
    result = _run([*TORCHRUN, *FIT, *strategy], tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    _assert_matches(tmp_path, reference)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--trainer.strategy=TimeParallelStrategy", "--trainer.strategy.time_parallel_size=2",
          "--trainer.devices=3"], "devices x num_nodes = 3 is not divisible"),
        ([*TIME_PARALLEL, "--model.arch_args={parareal: {num_slices: 3}}"],
         "num_slices=3 of a parareal block is not divisible by time_parallel_size=2"),
        ([*TIME_PARALLEL, "--model.arch=resnet", "--model.arch_args={}"],
         "the model has no parareal block"),
    ],
    ids=["devices", "num_slices", "no_block"],
)
def test_errors_before_any_process_starts(cli, args: list[str], message: str) -> None:
    result = cli([*FIT, *args])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(f"error: time_parallel: {message}")
    assert "Traceback" not in result.stderr


def test_two_nodes_rendezvous_through_c10d_and_match_one_process(tmp_path: Path,
                                                                  reference) -> None:
    """The README's multi-node command with two "nodes" on 127.0.0.1: one torchrun agent per
    node, one rank each, meeting at a c10d rendezvous; node 0 hosts the store."""
    endpoint = f"127.0.0.1:{_free_port()}"
    strategy = ["--trainer.strategy=TimeParallelStrategy",
                "--trainer.strategy.time_parallel_size=2", "--trainer.num_nodes=2",
                "--trainer.devices=1"]
    nodes = []
    for node in (0, 1):
        command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                   "--nproc_per_node=1", "--rdzv_backend=c10d", f"--rdzv_endpoint={endpoint}",
                   f"--rdzv_id=test-{tmp_path.name}", f"--rdzv_conf=is_host={int(node == 0)}",
                   "-m", "pnode_zoo", *FIT, *strategy]
        with (tmp_path / f"node{node}.log").open("w") as log:
            nodes.append(subprocess.Popen(command, cwd=tmp_path, env=cli_env(tmp_path),
                                          stdout=log, stderr=subprocess.STDOUT))
    try:
        codes = [node.wait(timeout=TIMEOUT) for node in nodes]
    finally:
        for node in nodes:
            if node.poll() is None:
                node.kill()
    assert codes == [0, 0], [(tmp_path / f"node{n}.log").read_text()[-3000:] for n in (0, 1)]
    _assert_matches(tmp_path, reference)
    assert len(list(tmp_path.glob("runs/*/*/config.yaml"))) == 1  # one run, written by rank 0
    # the time group's two ranks are on two nodes: rank 0 says so, with the fix
    assert ("a time group spans 2 nodes" in (tmp_path / "node0.log").read_text()
            and "make time_parallel_size divide the devices per node (1)"
            in (tmp_path / "node0.log").read_text())


def test_torchrun_world_size_must_equal_devices(tmp_path: Path) -> None:
    result = _run([*TORCHRUN, *FIT, "--trainer.strategy=time_parallel", "--trainer.devices=4"],
                  tmp_path)
    assert result.returncode != 0
    assert "error: time_parallel: torchrun started 2 processes but devices x num_nodes = 4" in (
        result.stderr)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGSTOP], ids=["killed", "hung"])
def test_a_lost_rank_ends_the_job_within_the_timeout(tmp_path: Path, signum: int) -> None:
    """Rank 1 killed (its peer sees the closed connection) or hung (the gloo timeout fires)."""
    timeout = 10  # the collective timeout; start-up has its own, generous one
    args = [*FIT, "--trainer.strategy=TimeParallelStrategy", "--trainer.devices=2",
            f"--trainer.strategy.timeout={timeout}", "--trainer.max_epochs=1000",
            "--trainer.limit_train_batches=50"]
    with (tmp_path / "out.txt").open("w") as log:
        rank0 = subprocess.Popen([*PNODE, *args], cwd=tmp_path,
                                 env=cli_env(tmp_path),
                                 stdout=log, stderr=subprocess.STDOUT)
    rank1 = None
    try:
        deadline = time.monotonic() + TIMEOUT
        while not list(tmp_path.glob("logs/**/metrics.csv")):  # training has started
            assert rank0.poll() is None and time.monotonic() < deadline
            time.sleep(0.5)
        (rank1,) = _children(rank0.pid)
        os.kill(rank1, signum)
        # Bounded, not timed: the job ends (rather than waiting forever) once the peer's
        # connection closes or the timeout passes; a loaded machine needs a while to tear down.
        returncode = rank0.wait(timeout=timeout + TIMEOUT)
        assert returncode != 0
    finally:
        if rank1 is not None:  # a hung rank must not outlive the test
            with contextlib.suppress(ProcessLookupError):
                os.kill(rank1, signal.SIGKILL)
        if rank0.poll() is None:
            rank0.kill()
    assert "time_parallel: rank 0 of 2 stops on" in (tmp_path / "out.txt").read_text()
