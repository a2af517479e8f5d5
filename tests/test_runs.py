"""Run directories: never shared, each with its own config, checkpoints and logs."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from clitools import TIMEOUT, read_metrics, run_dirs, start_cli

from pnode_zoo import runs
from pnode_zoo.errors import UserInputError
from pnode_zoo.training import panels


def test_run_directories_made_in_the_same_second_differ(tmp_path: Path) -> None:
    made = {runs.create_run_dir(tmp_path, "digits-odenet") for _ in range(50)}
    assert len(made) == 50 and all(path.is_dir() and not any(path.iterdir()) for path in made)


def _lock_holder(run_dir: Path) -> subprocess.Popen:
    """A process that holds ``run_dir``'s lock until it is killed."""
    code = ("import sys, time; from pathlib import Path; from pnode_zoo import runs; "
            "runs.lock_run_dir(Path(sys.argv[1])); print('locked', flush=True); time.sleep(600)")
    holder = subprocess.Popen([sys.executable, "-c", code, str(run_dir)], stdout=subprocess.PIPE,
                              text=True)
    assert holder.stdout.readline().strip() == "locked"
    return holder


def test_a_run_in_use_cannot_be_taken_and_a_killed_one_can(tmp_path: Path) -> None:
    run_dir = runs.create_run_dir(tmp_path, "digits-odenet")
    holder = _lock_holder(run_dir)
    try:
        with pytest.raises(ValueError, match="is in use by another process"):
            runs.lock_run_dir(run_dir)
    finally:
        holder.kill()
        holder.wait()
    runs.lock_run_dir(run_dir)  # the kernel dropped the killed holder's lock


def _fake_run(root: Path, name: str, best: bool, age: float) -> Path:
    run_dir = runs.create_run_dir(root, name)
    (run_dir / runs.CONFIG).write_text("{}\n")
    (run_dir / runs.CHECKPOINTS).mkdir()
    last = run_dir / runs.CHECKPOINTS / runs.LAST
    last.write_bytes(b"x")
    os.utime(last, (time.time() - age, time.time() - age))
    if best:
        (run_dir / runs.CHECKPOINTS / "best-epoch001-val_acc0.5000.ckpt").write_bytes(b"x")
    return run_dir


def test_last_and_best_come_from_the_run_trained_last(tmp_path: Path) -> None:
    older = _fake_run(tmp_path, "digits-odenet", best=True, age=100)
    newer = _fake_run(tmp_path, "digits-odenet", best=True, age=10)
    _fake_run(tmp_path, "gunpoint-fcn", best=True, age=1)  # another name: never chosen
    found = {which: runs.find_checkpoint(tmp_path, "digits-odenet", which)
             for which in ("last", "best")}
    assert found["last"] == newer / "checkpoints/last.ckpt"
    assert found["best"] == newer / "checkpoints/best-epoch001-val_acc0.5000.ckpt"
    assert runs.run_dir_of_checkpoint(older / "checkpoints/last.ckpt") == older
    assert runs.run_dir_of_checkpoint(tmp_path / "last.ckpt") is None
    with pytest.raises(UserInputError, match="no run of 'digits-resnet'"):
        runs.find_checkpoint(tmp_path, "digits-resnet", "last")


@pytest.mark.slow
def test_two_runs_started_at_once_keep_to_their_own_directories(tmp_path: Path) -> None:
    args = ["fit", "--trainer.max_epochs=2", "--trainer.limit_train_batches=2",
            "--trainer.limit_val_batches=1", "--trainer.limit_test_batches=1",
            "--trainer.logger=CSVLogger"]
    processes = [start_cli(args, tmp_path, tmp_path / f"run{k}.log") for k in range(2)]
    for k, process in enumerate(processes):
        assert process.wait(timeout=TIMEOUT) == 0, (tmp_path / f"run{k}.log").read_text()[-3000:]
    first, second = run_dirs(tmp_path)
    for run_dir in (first, second):
        files = {str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file()}
        assert {"config.yaml", "checkpoints/last.ckpt", "logs/version_0/metrics.csv"} <= files
        assert [f for f in files if f.startswith("checkpoints/best-epoch")]
        assert not [f for f in files if "partial" in f]
    assert {p.name for p in (tmp_path / "runs").iterdir()} == {"digits-odenet_parareal"}
    # the same seeded command: the same numbers (but wall-clock ones), each in its own log
    clock = (panels.EPOCH_TIME, panels.SAMPLES_PER_SECOND)
    metrics = [[{k: v for k, v in row.items() if k not in clock}
                for row in read_metrics(d / "logs/version_0/metrics.csv")] for d in (first, second)]
    assert metrics[0] == metrics[1] and any(row.get("test/acc") for row in metrics[0])


def test_a_released_run_directory_can_be_locked_again_in_the_same_process(tmp_path: Path) -> None:
    # flock belongs to the open file: a second lock from this process is refused until the
    # first command's locks are released (as PnodeCLI.run does when its command ends)
    runs.lock_run_dir(tmp_path)
    with pytest.raises(UserInputError, match="in use by another process"):
        runs.lock_run_dir(tmp_path)
    runs.release_run_dirs()
    runs.lock_run_dir(tmp_path)
    runs.release_run_dirs()
