"""Run by test_failure.py: ``python failure_block_worker.py OUT.json CASE:WHERE:RANK ...``.

Forks 2 gloo ranks. For each spec, in turn on one time group, both ranks run a parareal
block's forward and backward, and rank RANK raises ``RuntimeError("injected")`` inside its
part of the step: WHERE ``fine`` (a forward fine solve), ``coarse`` (the forward coarse sweep),
``vjp`` (a fine vector-Jacobian product of the backward) or ``none`` (nothing raises). Rank 0
writes, per spec, what each rank raised: [type name, message] (or null if it raised nothing).
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from pnode_zoo.distributed import create_groups
from pnode_zoo.ode import MLPVectorField, PararealODEBlock
from pnode_zoo.ode.parareal.problem import Linearization
from pnode_zoo.ode.propagators import Propagator

CASES = {  # the forward agrees after every iteration (tol > 0) or once (pipelined, tol 0)
    "unrolled": {"backward": "unrolled", "tol": 1e-12},
    "pipelined": {"backward": "unrolled", "tol": 0.0},
    "fine_adjoint": {"backward": "fine_adjoint", "tol": 1e-12, "backward_micro_batches": 2},
    "parareal_adjoint": {"backward": "parareal_adjoint", "tol": 1e-12},
}
armed: dict[str, str | None] = {"where": None}
solve, pull = Propagator.__call__, Linearization._pull


def _solve(self, *args, **kwargs):
    forward = not torch.is_grad_enabled()  # a backward's re-run has autograd on
    if forward and armed["where"] == self.name:
        raise RuntimeError(f"injected into the {self.name} propagator")
    return solve(self, *args, **kwargs)


def _pull(self, *args, **kwargs):
    if armed["where"] == "vjp" and self.kind == "fine":
        raise RuntimeError("injected into a fine VJP")
    return pull(self, *args, **kwargs)


def worker(rank: int, store: str, specs: list[str], path: str) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    timeout = timedelta(seconds=300)  # a hang would show as the test's own timeout
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timeout)
    Propagator.__call__, Linearization._pull = _solve, _pull
    raised = {}
    group, _ = create_groups(2, timeout)  # one group: an agreed failure leaves it usable
    for spec in specs:
        case, where, failing = spec.split(":")
        torch.manual_seed(0)
        block = PararealODEBlock(MLPVectorField(3, 8), 0.0, 1.0, num_slices=4, fine_steps=2,
                                 max_iters=3, **CASES[case])
        block.time_group = group
        x = torch.randn(4, 3, requires_grad=True)
        armed["where"] = where if rank == int(failing) else None
        try:
            block(x).square().sum().backward()
            raised[spec] = None
        except Exception as exc:  # what each rank raised is the result
            raised[spec] = [type(exc).__name__, str(exc)]
    every = [None, None]
    dist.all_gather_object(every, raised)
    if rank == 0:
        with open(path, "w") as f:
            json.dump({spec: [every[0][spec], every[1][spec]] for spec in specs}, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    output = sys.argv[1]
    mp.start_processes(worker, (f"{output}.store", sys.argv[2:], output), nprocs=2,
                       start_method="fork")
