"""Checkpoints: atomic writes, safe reading, the architecture check and the random state."""

from __future__ import annotations

import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pnode_zoo.training.checkpoints import (
    AtomicCheckpointIO,
    RandomStateCheckpoint,
    check_fits,
    read_checkpoint,
)


def _checkpoint(value: float) -> dict:
    return {"state_dict": {"weight": torch.full((3, 2), value)}, "epoch": int(value)}


class Marker:
    """A pickle that, if unpickled by a trusting loader, creates a file (code from the file)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


@pytest.mark.parametrize("moment", ["writing", "before_rename"])
def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path: Path, moment: str) -> None:
    path = tmp_path / "last.ckpt"
    AtomicCheckpointIO().save_checkpoint(_checkpoint(1.0), path)
    # A second save in a child process that SIGKILLs itself half-way through writing the file
    # or just before the rename that would publish it.
    kill = "os.kill(os.getpid(), signal.SIGKILL)"
    patch = {
        "writing": f"torch.save = lambda obj, f: (f.write(b'PK' * 500), f.flush(), {kill})",
        "before_rename": f"os.replace = lambda *a: {kill}",
    }[moment]
    script = (
        "import os, signal, sys, torch\n"
        "from pnode_zoo.training.checkpoints import AtomicCheckpointIO\n"
        f"{patch}\n"
        "checkpoint = {'state_dict': {'weight': torch.full((3, 2), 2.0)}, 'epoch': 2}\n"
        "AtomicCheckpointIO().save_checkpoint(checkpoint, sys.argv[1])\n"
    )
    result = subprocess.run([sys.executable, "-c", script, str(path)], timeout=120)
    assert result.returncode == -9
    assert torch.equal(read_checkpoint(path)["state_dict"]["weight"], torch.full((3, 2), 1.0))


def test_a_save_replaces_the_file_and_leaves_nothing_else(tmp_path: Path) -> None:
    path = tmp_path / "checkpoints" / "last.ckpt"
    for value in (1.0, 2.0):
        AtomicCheckpointIO().save_checkpoint(_checkpoint(value), path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    assert read_checkpoint(path)["epoch"] == 2


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "truncated or corrupt"),
        (lambda p: p.write_bytes(b"\0" * 64), "truncated or corrupt"),
        (lambda p: p.write_bytes(b""), "is empty"),
        (lambda p: p.unlink(), "does not exist"),
        (lambda p: torch.save({"weights": torch.zeros(2)}, p), "is not a training checkpoint"),
    ],
    ids=["truncated", "garbage", "empty", "missing", "no_state_dict"],
)
def test_a_damaged_checkpoint_is_refused_in_one_sentence(tmp_path: Path, damage, message) -> None:
    path = tmp_path / "x.ckpt"
    torch.save(_checkpoint(1.0), path)
    damage(path)
    with pytest.raises(ValueError, match=message) as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)


def test_a_malicious_pickle_is_refused_and_runs_no_code(tmp_path: Path) -> None:
    marker = tmp_path / "code-ran"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "payload": Marker(marker)}, path)
    torch.load(path, weights_only=False)  # the control: a trusting load runs the code
    assert marker.exists()
    marker.unlink()
    with pytest.raises(ValueError, match="refused: it holds Python objects"):
        read_checkpoint(path)
    assert not marker.exists()


def test_weights_of_another_architecture_are_named() -> None:
    checkpoint = {"state_dict": {"0.weight": torch.zeros(4, 3), "0.bias": torch.zeros(4),
                                 "extra": torch.zeros(1)},
                  "hyper_parameters": {"arch": "odenet"}}
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 2))
    with pytest.raises(ValueError) as error:
        check_fits(model, checkpoint, "x.ckpt")
    text = str(error.value)
    assert "2 weights missing (e.g. 2.weight)" in text
    assert "1 unexpected (e.g. extra)" in text
    assert "0.weight is [4, 3] in the checkpoint but [5, 3] here" in text
    assert "trained as odenet" in text
    check_fits(nn.Linear(3, 4), {"state_dict": nn.Linear(3, 4).state_dict()}, "ok.ckpt")


def test_the_random_state_saved_with_a_checkpoint_is_restored(tmp_path: Path) -> None:
    callback = RandomStateCheckpoint()
    torch.manual_seed(1), np.random.seed(1), random.seed(1)
    state = callback.state_dict()
    torch.save(state, tmp_path / "state.pt")  # must survive a weights_only load
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.manual_seed(2), np.random.seed(2), random.seed(2)
    restored = RandomStateCheckpoint()
    restored.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    restored.on_train_epoch_start(None, None)
    again = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], again[0])
    assert np.array_equal(expected[1], again[1]) and expected[2] == again[2]
