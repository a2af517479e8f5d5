"""Host synchronisations of one training step of the default model (configs/digits/
node_parareal.yaml) on the CPU path: none from the timers, and no more reads of a tensor's
value, by any code, than parareal iterations.

On a GPU every timer reading used to synchronise the device (84 per step) and every read of a
value (``.item()``, ``bool(tensor)``...) waits for the queued work. Here the timers are made
to see a CUDA device (``torch.cuda.synchronize`` counted, not called), and every read is
counted, wherever its caller is. torchdiffeq's ``odeint`` would add 7 + steps reads of its
time grid per solve (224 per step here); the fixed-step propagators step its tableaus
themselves for that reason (``propagators.Tableau``).
"""

from __future__ import annotations

import sys
from collections import Counter

import torch
import yaml
from clitools import REPO

from pnode_zoo.distributed import communicator
from pnode_zoo.models.registry import create_model
from pnode_zoo.ode.parareal import problem

READS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__")


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
            caller = sys._getframe(1)
            reads[f"{name} {caller.f_code.co_filename}:{caller.f_lineno}"] += 1
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
