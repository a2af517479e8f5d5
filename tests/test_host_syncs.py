"""Host synchronisations of one training step of the default model (configs/digits/
node_parareal.yaml) on the CPU path: none from the timers, and no more reads of a tensor's
value by pnode_zoo than parareal iterations.

On a GPU every timer reading used to synchronise the device (84 per step) and every read of a
value (``.item()``, ``bool(tensor)``...) waits for the queued work. Here the timers are made
to see a CUDA device (``torch.cuda.synchronize`` counted, not called), and every read whose
caller is pnode_zoo's own code is counted.

Not counted: torchdiffeq's reads of the time tensors, 8 per fixed-step solve of one step
(``odeint``'s input checks on t, 3; the fixed-grid solver's grid asserts, 2; its output-time
comparison and interpolation tests, 3), 224 per step here (28 solves) against pnode_zoo's 7.
torchdiffeq moves t to the state's device, so on a GPU each waits for the queued work; only a
fixed-step loop of our own (or torchdiffeq's private solver classes) would avoid them.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch
import yaml
from clitools import REPO

from pnode_zoo.distributed import communicator
from pnode_zoo.models.registry import create_model
from pnode_zoo.ode.parareal import problem

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")
PACKAGE = str(Path(communicator.__file__).parents[1])


def test_a_training_step_of_the_default_model_reads_the_device_once_per_iteration(
        monkeypatch):
    config = yaml.safe_load((REPO / "configs" / "digits" / "node_parareal.yaml").read_text())
    torch.manual_seed(0)
    model = create_model(config["model"]["init_args"]["arch"],
                         **config["model"]["init_args"]["arch_args"])
    x, y = torch.randn(64, 1, 8, 8), torch.randint(0, 10, (64,))

    synchronised = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: synchronised.append(1))
    monkeypatch.setattr(problem, "clock", lambda device: communicator.clock(torch.device("cuda")))
    reads = Counter()

    def counted(name, original):
        def read(self, *args, **kwargs):
            caller = sys._getframe(1).f_code.co_filename
            if caller.startswith(PACKAGE):
                reads[f"{name} {Path(caller).name}:{sys._getframe(1).f_lineno}"] += 1
            return original(self, *args, **kwargs)
        return read

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, counted(name, getattr(torch.Tensor, name)))
    torch.nn.functional.cross_entropy(model(x), y).backward()
    monkeypatch.undo()

    stats = model.block.stats
    assert stats.forward_iters == 4 and stats.backward_iters == 4  # the iteration cap, K = N
    assert synchronised == []
    # forward: x0 checked, the coarse sweep checked, one residual per iteration; backward: one
    assert sum(reads.values()) == stats.forward_iters + 3, reads
    assert sum(reads.values()) <= stats.forward_iters + stats.backward_iters
