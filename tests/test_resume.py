"""A fit killed mid-epoch (SIGKILL, one process or one of two ranks) and resumed with
``fit --ckpt_path last`` ends with exactly the metrics of an uninterrupted seeded run.

All runs are float64 so that the time-parallel run can be compared with the one-process one
(equal to 1e-8 in the training losses, tests/distributed); the one-process resumption is
compared bit for bit.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

import pytest
from clitools import (
    NARROW_DIGITS,
    REPO,
    TIMEOUT,
    read_metrics,
    run_cli,
    run_dirs,
    start_cli,
)

pytestmark = pytest.mark.slow

STEPS_PER_EPOCH = 6
FIT = ["fit", "--config", str(REPO / "configs" / "digits" / "node_parareal.yaml"), NARROW_DIGITS,
       "--trainer.accelerator=cpu", "--trainer.precision=64-true", "--trainer.max_epochs=3",
       f"--trainer.limit_train_batches={STEPS_PER_EPOCH}", "--trainer.limit_val_batches=2",
       "--trainer.limit_test_batches=3", "--trainer.log_every_n_steps=1",
       "--trainer.logger=CSVLogger", "--trainer.logger.flush_logs_every_n_steps=1"]
TWO_RANKS = ["--trainer.strategy=TimeParallelStrategy", "--trainer.devices=2",
             "--trainer.strategy.timeout=60"]


def _results(run_dir: Path) -> dict[str, list[float]]:
    """Validation losses by epoch and the test metrics, from every log version of a run."""
    rows = [row for path in sorted(run_dir.glob("logs/version_*/metrics.csv"))
            for row in read_metrics(path)]
    val = {int(r["epoch"]): float(r["val/loss"]) for r in rows if r.get("val/loss")}
    test = [float(r[key]) for r in rows for key in ("test/acc", "test/loss") if r.get(key)]
    return {"val_loss": [val[epoch] for epoch in sorted(val)], "test": test}


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(c) for c in path.read_text().split()] if path.exists() else []


def _kill_in_second_epoch(cwd: Path, args: list[str], victim: str) -> None:
    """Start a fit; once a step of the second epoch is logged, SIGKILL it (``victim="run"``)
    or its second rank (``"rank1"``) and wait for the run to end."""
    process = start_cli(args, cwd, cwd / "killed.log")
    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert process.poll() is None, (cwd / "killed.log").read_text()[-3000:]
            assert time.monotonic() < deadline
            steps = [int(r["step"]) for path in cwd.glob("runs/*/*/logs/version_0/metrics.csv")
                     for r in read_metrics(path) if r.get("train/loss_step")]
            if steps and max(steps) > STEPS_PER_EPOCH:  # epoch 1 has taken a step
                break
            time.sleep(0.2)
        if victim == "run":
            os.kill(process.pid, signal.SIGKILL)
        else:
            (rank1,) = _children(process.pid)
            os.kill(rank1, signal.SIGKILL)
        returncode = process.wait(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for child in _children(process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(child, signal.SIGKILL)
    assert returncode != 0  # the run did not finish on its own


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[float]]:
    cwd = tmp_path_factory.mktemp("uninterrupted")
    result = run_cli(FIT, cwd)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_dir,) = run_dirs(cwd)
    results = _results(run_dir)
    assert len(results["val_loss"]) == 3 and len(results["test"]) == 2
    return results


def test_a_killed_fit_resumes_to_exactly_the_uninterrupted_metrics(tmp_path: Path,
                                                                    uninterrupted) -> None:
    _kill_in_second_epoch(tmp_path, FIT, victim="run")
    (run_dir,) = run_dirs(tmp_path)
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    resumed = run_cli([*FIT, "--ckpt_path", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert run_dirs(tmp_path) == [run_dir]  # the run continued in its own directory
    assert (run_dir / "config.resume-1.yaml").exists()
    assert _results(run_dir) == uninterrupted


def test_a_two_rank_fit_with_a_killed_rank_resumes_to_the_same_metrics(tmp_path: Path,
                                                                         uninterrupted) -> None:
    _kill_in_second_epoch(tmp_path, [*FIT, *TWO_RANKS], victim="rank1")
    resumed = run_cli([*FIT, *TWO_RANKS, "--ckpt_path", "last"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (run_dir,) = run_dirs(tmp_path)
    results = _results(run_dir)
    # time-parallel equals one process to rounding (tests/distributed), so: to 1e-8
    assert results["val_loss"] == pytest.approx(uninterrupted["val_loss"], rel=0, abs=1e-8)
    assert results["test"][0] == uninterrupted["test"][0]  # accuracy: exactly
    assert results["test"][1] == pytest.approx(uninterrupted["test"][1], rel=0, abs=1e-8)
