"""An exception on one rank is agreed by its time group: every rank stops at once, naming it.

The block-level test runs every gradient mode on two forked gloo ranks and raises inside one
rank's fine solve, coarse sweep or fine VJP; the CLI test raises inside rank 1's fine solve
or fine VJP of a 2-rank ``fit`` under Lightning's launcher, where each rank's first error line
must name the injected cause and both processes must end within 20 s of it (the collective
timeout is far longer, so only the agreement can end them in time).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clitools import NARROW_DIGITS, REPO, TIMEOUT, cli_env

pytestmark = pytest.mark.slow
HERE = Path(__file__).parent
CONFIG = str(REPO / "configs" / "digits" / "node_parareal.yaml")
FIT = ["fit", "--config", CONFIG, NARROW_DIGITS, "--trainer.accelerator=cpu",
       "--trainer.max_epochs=1", "--trainer.limit_train_batches=4",
       "--trainer.limit_val_batches=2", "--trainer.logger=false",
       "--trainer.strategy=TimeParallelStrategy",
       "--trainer.devices=2", "--trainer.strategy.timeout=120"]


def test_every_gradient_mode_agrees_on_a_failure(tmp_path: Path) -> None:
    specs = ["unrolled:fine:1", "unrolled:coarse:1", "unrolled:vjp:1", "pipelined:fine:1",
             "pipelined:vjp:0", "fine_adjoint:vjp:1", "fine_adjoint:vjp:0",
             "parareal_adjoint:vjp:1", "parareal_adjoint:fine:0"]
    out = tmp_path / "raised.json"
    subprocess.run([sys.executable, str(HERE / "failure_block_worker.py"), str(out), *specs,
                    "unrolled:none:0"], cwd=REPO, check=True, timeout=TIMEOUT)
    raised = json.loads(out.read_text())
    assert raised["unrolled:none:0"] == [None, None]  # the same group, after the failures
    for spec in specs:
        failing = int(spec.split(":")[2])
        own, peer = raised[spec][failing], raised[spec][1 - failing]
        assert own[0] == "RuntimeError" and own[1].startswith("injected into"), (spec, own)
        assert peer == ["RankFailed", f"rank {failing} failed: RuntimeError: {own[1]}"], spec


def _first_error_line(log: str, rank: int) -> str:
    """The first line of ``rank`` that reports an error: the strategy's "stops on" line or a
    line of its traceback."""
    for line in log.splitlines():
        if (line.startswith(f"time_parallel: rank {rank} of") or (
                line.startswith(f"[rank{rank}]:") and "Error" in line)):
            return line
    raise AssertionError(f"no error line of rank {rank} in:\n{log[-3000:]}")


# The fine solve's failure through a whole 2-rank fit; the VJP's reaches the other rank through
# the same agreement, checked at block level in every gradient mode above (a second 2-rank fit
# here would add half a minute of suite time for no other code path).
def test_a_failure_on_rank_1_ends_both_ranks_with_its_cause(tmp_path: Path) -> None:
    phase = "forward"
    env = cli_env(tmp_path, {"PNODE_ZOO_TEST_FAIL": f"{phase}:1:6"})
    with (tmp_path / "out.txt").open("w") as log:
        rank0 = subprocess.Popen([sys.executable, str(HERE / "failure_worker.py"), *FIT],
                                 cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + TIMEOUT
        while not (tmp_path / "injected.time").exists():
            assert rank0.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        injected = float((tmp_path / "injected.time").read_text())
        # rank 0 launched rank 1 and waits for it: its end is both ranks' end
        returncode = rank0.wait(timeout=max(20 - (time.time() - injected), 0.1))
    finally:
        if rank0.poll() is None:
            rank0.kill()
    log = (tmp_path / "out.txt").read_text()
    assert returncode != 0
    cause = f"RuntimeError: injected failure in the {phase} pass"
    assert f"rank 1 of 2 stops on {cause}" in _first_error_line(log, 1)
    assert f"rank 0 of 2 stops on RankFailed: rank 1 failed: {cause}" in _first_error_line(log, 0)
