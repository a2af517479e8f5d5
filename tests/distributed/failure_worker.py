"""Run by test_failure.py in place of ``python -m pnode_zoo``: the CLI, with an exception
injected into one rank's parareal step.

``PNODE_ZOO_TEST_FAIL=PHASE:RANK:CALL`` makes local rank RANK raise
``RuntimeError("injected failure in the PHASE pass")`` in its CALL-th (from 1) fine solve of a
forward pass (PHASE ``forward``) or fine vector-Jacobian product (PHASE ``backward``), inside
the propagator, where a solver's own error (Newton not converging, out of memory) would come
from. Lightning's popen launcher re-runs this script for the other ranks, so every rank reads
the variable and only rank RANK raises, writing the time it did so to ``injected.time``.
"""

from __future__ import annotations

import os
import sys
import time
from itertools import count
from pathlib import Path

import torch

from pnode_zoo.cli import main
from pnode_zoo.ode.parareal.problem import Linearization
from pnode_zoo.ode.propagators import Propagator

phase, rank, call = os.environ["PNODE_ZOO_TEST_FAIL"].split(":")
calls = count(1)


def _fail_at_call() -> None:
    if os.environ.get("LOCAL_RANK", "0") == rank and next(calls) == int(call):
        Path("injected.time").write_text(str(time.time()))
        raise RuntimeError(f"injected failure in the {phase} pass")


if phase == "forward":
    solve = Propagator.__call__

    def _solve(self, *args, **kwargs):
        if self.name == "fine" and not torch.is_grad_enabled():  # not a backward's re-run
            _fail_at_call()
        return solve(self, *args, **kwargs)

    Propagator.__call__ = _solve
else:
    pull = Linearization._pull

    def _pull(self, *args, **kwargs):
        if self.kind == "fine":
            _fail_at_call()
        return pull(self, *args, **kwargs)

    Linearization._pull = _pull

sys.exit(main(sys.argv[1:]))
