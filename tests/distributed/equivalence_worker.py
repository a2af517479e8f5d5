"""Run by test_equivalence.py: ``python equivalence_worker.py WORLD OUT.json TIME_SIZE:CASE ...``.

Forks WORLD gloo ranks; for each TIME_SIZE, a (data, time) device mesh from ``create_groups``
(time groups of that size, data groups across them; both must carry the world's timeout).
For each TIME_SIZE:CASE, every rank builds the same float64 model (stem -> parareal block ->
head), runs it once in one process (the reference, no time group) and once time-parallel under
DistributedDataParallel over its data group, on its data shard, and records the largest
difference of output, parameter gradients and input
gradient. Rank 0 writes {"TIME_SIZE:CASE": max difference over ranks} to OUT.json.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from pnode_zoo.distributed import create_groups
from pnode_zoo.ode import MLPVectorField, PararealODEBlock

BATCH, DIM, SLICES = 8, 6, 4
CASES = {
    # name: block options, and "per_slice", "trajectory", "vmap" (a field without
    # time_per_sample, vmapped over the slices as a torchdiffeq field is)
    "shared_fine_adjoint": {"backward": "fine_adjoint"},
    "shared_parareal_adjoint": {"backward": "parareal_adjoint"},
    # the fine adjoint chain pipelined over parts of the batch; the reference runs it whole
    "shared_fine_adjoint_micro_batches": {"backward": "fine_adjoint",
                                          "backward_micro_batches": 3},
    "per_slice_fine_adjoint_trajectory_micro_batches": {
        "per_slice": True, "backward": "fine_adjoint", "trajectory": True,
        "backward_micro_batches": 8},
    "shared_inexact": {"backward": "parareal_adjoint", "max_iters": 1, "backward_max_iters": 1},
    "per_slice_fine_adjoint_trajectory": {"per_slice": True, "backward": "fine_adjoint",
                                          "trajectory": True},
    "per_slice_parareal_adjoint_trajectory": {"per_slice": True, "backward": "parareal_adjoint",
                                              "trajectory": True, "backward_max_iters": 2},
    "per_slice_parareal_adjoint": {"per_slice": True, "backward": "parareal_adjoint"},
    "shared_unrolled_k0": {"backward": "unrolled", "max_iters": 0},
    "shared_unrolled_k1": {"backward": "unrolled", "max_iters": 1},
    "shared_unrolled_tol_vmap": {"backward": "unrolled", "tol": 1e-3, "vmap": True},
    "per_slice_unrolled_k2_trajectory": {"per_slice": True, "backward": "unrolled",
                                         "max_iters": 2, "trajectory": True},
    "per_slice_unrolled_kn": {"per_slice": True, "backward": "unrolled"},
    "shared_unrolled_kept_graphs": {"backward": "unrolled", "max_iters": 2, "recompute": False},
    "per_slice_unrolled_kept_graphs_trajectory": {"per_slice": True, "backward": "unrolled",
                                                  "recompute": False, "trajectory": True,
                                                  "tol": 1e-3},
}


class TorchdiffeqField(MLPVectorField):
    """The same field, but called as torchdiffeq calls it (the block vmaps it)."""

    time_per_sample = False


class Net(nn.Module):
    """stem -> parareal block -> head; the loss reads the final state or the trajectory."""

    def __init__(self, per_slice: bool = False, trajectory: bool = False, vmap: bool = False,
                 **options) -> None:
        super().__init__()
        kind = TorchdiffeqField if vmap else MLPVectorField
        field = [kind(DIM, 16) for _ in range(SLICES)] if per_slice else kind(DIM, 16)
        self.stem, self.head = nn.Linear(3, DIM), nn.Linear(DIM, 2)
        options = {"num_slices": SLICES, "fine_steps": 4, "tol": 0.0, **options}
        self.block = PararealODEBlock(field, 0.0, 1.5, options, return_trajectory=trajectory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(self.stem(x))
        if self.block.return_trajectory:
            out = out.mean(dim=0)
        return self.head(out)


def run(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], torch.Tensor]:
    """Output, parameter gradients and input gradient of the mean squared output."""
    x = x.detach().requires_grad_()
    out = model(x)
    out.square().mean().backward()
    return out.detach(), [p.grad.clone() for p in model.parameters()], x.grad


def worker(rank: int, world: int, store: str, specs: list[str], path: str) -> None:
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)
    timeout = timedelta(seconds=300)  # generous: a loaded machine starts ranks slowly
    # A file store: no port to pick, so two copies of the suite never clash.
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world,
                            timeout=timeout)
    sizes = sorted({int(spec.split(":")[0]) for spec in specs})
    groups = {size: create_groups(size, timeout) for size in sizes}
    for time_group, data_group in groups.values():  # the mesh's groups: bounded as the world
        for group in (time_group.group, data_group):
            own = group._get_backend(torch.device("cpu")).options._timeout
            assert own == timeout, f"a mesh group's collective timeout is {own}, not {timeout}"
    errors = {}
    for spec in specs:
        time_size, case = int(spec.split(":")[0]), spec.split(":")[1]
        data_groups, data_index = world // time_size, rank // time_size
        torch.manual_seed(0)
        whole = {k: v for k, v in CASES[case].items() if k != "backward_micro_batches"}
        reference = Net(**whole)
        x = torch.randn(BATCH, 3)
        ref_out, ref_grads, ref_x_grad = run(reference, x)
        model = Net(**CASES[case])
        model.load_state_dict(reference.state_dict())
        model.block.time_group, data_group = groups[time_size]
        shard = slice(data_index * BATCH // data_groups, (data_index + 1) * BATCH // data_groups)
        ddp = DistributedDataParallel(model, process_group=data_group)
        out, grads, x_grad = run(ddp, x[shard])
        # each data group's loss is the mean over its shard: its input gradient is scaled up
        diffs = [(out - ref_out[shard]).abs().max(),
                 (x_grad / data_groups - ref_x_grad[shard]).abs().max()]
        diffs += [(g - r).abs().max() for g, r in zip(grads, ref_grads, strict=True)]
        largest = torch.tensor([max(d.item() for d in diffs)])
        dist.all_reduce(largest, dist.ReduceOp.MAX)
        errors[spec] = largest.item()
    if rank == 0:
        with open(path, "w") as f:
            json.dump(errors, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    world_size, output = int(sys.argv[1]), sys.argv[2]
    store = f"{output}.store"  # a fresh file beside the output, in the test's own folder
    # fork: the ranks inherit the imported modules (imports take seconds here)
    mp.start_processes(worker, (world_size, store, sys.argv[3:], output),
                       nprocs=world_size, start_method="fork")
