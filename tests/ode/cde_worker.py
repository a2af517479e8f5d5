"""Run by test_cde_time_parallel.py: ``python cde_worker.py OUT.json [readout]``.

Forks 2 gloo ranks in one time group. Every rank builds the same float64 neural CDE, solves it
in one process (the reference, no time group) and time-parallel, and records the largest
difference of output and gradients per case; and, with the per-sample warm start, of outputs,
iteration counts and cache hit rates over a sequence of calls. With ``readout``, instead: the
zoo's ``ncde_parareal`` classifier with ``readout: boundaries`` (the head reads every chunk
boundary, most of them solved on the other rank), logits and every parameter's gradient per
case (``READOUT_CASES``). Rank 0 writes the JSON.
"""

from __future__ import annotations

import json
import sys
from datetime import timedelta

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from cde_helpers import F64, CDEFunc, coefficients, series

from pnode_zoo.distributed import create_groups
from pnode_zoo.models import create_model
from pnode_zoo.ode import NeuralCDEBlock

BATCH, LENGTH, CHANNELS, HIDDEN, SLICES = 4, 25, 3, 4, 4
CASES = {
    "unrolled_kn": {"backward": "unrolled", "tol": 0.0},
    "unrolled_tol": {"backward": "unrolled", "tol": 1e-6},
    "fine_adjoint": {"backward": "fine_adjoint", "tol": 0.0},
    "parareal_adjoint": {"backward": "parareal_adjoint", "tol": 0.0},
    "log_ode_midpoint_k2": {"backward": "unrolled", "tol": 0.0, "max_iters": 2,
                            "coarse": "midpoint"},
    "increment_k1": {"backward": "unrolled", "tol": 0.0, "max_iters": 1,
                     "coarse_field": "increment"},
}

#: parareal options of the readout cases, each run on two calls (the second warm-started)
READOUT_CASES = {
    "unrolled_warm": {"backward": "unrolled", "tol": 1e-6, "warm_start": True},
    "fine_adjoint": {"backward": "fine_adjoint", "tol": 0.0},
    "parareal_adjoint_k2": {"backward": "parareal_adjoint", "tol": 0.0, "max_iters": 2,
                            "backward_max_iters": 2},
}


def gradients(block, coeffs, z0, index=None):
    func = block.func
    func.zero_grad()
    start = z0.clone().requires_grad_()
    out = block(coeffs, start, index=index)
    (out * torch.linspace(-1, 1, HIDDEN, dtype=F64)).sum().backward()
    return [out.detach(), start.grad] + [p.grad.clone() for p in func.parameters()]


def largest(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    return max((x - y).abs().max().item() for x, y in zip(a, b, strict=True))


def worker(rank: int, store: str, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=300))
    group, _ = create_groups(2, timedelta(seconds=300))
    torch.manual_seed(0)
    func = CDEFunc(HIDDEN, CHANNELS).to(F64)
    x = series(6, LENGTH, CHANNELS)
    coeffs, z0 = coefficients(x, "cubic"), torch.randn(6, HIDDEN, dtype=F64)
    result: dict = {}
    for name, options in CASES.items():
        reference = NeuralCDEBlock(func, LENGTH, SLICES, **options)
        grouped = NeuralCDEBlock(func, LENGTH, SLICES, **options)
        grouped.time_group = group
        result[name] = largest(gradients(grouped, coeffs[:BATCH], z0[:BATCH]),
                               gradients(reference, coeffs[:BATCH], z0[:BATCH]))
    # warm start: the same calls on both blocks; each rank caches its own chunks' jumps
    reference = NeuralCDEBlock(func, LENGTH, SLICES, tol=1e-6, warm_start=True)
    grouped = NeuralCDEBlock(func, LENGTH, SLICES, tol=1e-6, warm_start=True)
    grouped.time_group = group
    diffs, iters, rates = [], [], []
    for index in ([0, 1, 2, 3], [0, 1, 2, 3], [4, 1, 5, 2]):
        index = torch.tensor(index)
        got = gradients(grouped, coeffs[index], z0[index], index)
        want = gradients(reference, coeffs[index], z0[index], index)
        diffs.append(largest(got, want))
        iters.append([grouped.stats.forward_iters, reference.stats.forward_iters])
        rates.append([grouped.stats.cache_hit_rate, reference.stats.cache_hit_rate])
        with torch.no_grad():  # a training step between the calls
            for p in func.parameters():
                p.add_(1e-7 * torch.randn(p.shape, generator=torch.Generator().manual_seed(1),
                                          dtype=F64))
    rows = grouped.cache.lookup(torch.tensor([0]), torch.zeros(SLICES // 2, 1, HIDDEN,
                                                               dtype=F64))[1]
    result["warm"] = {"max_difference": max(diffs), "iterations": iters, "hit_rates": rates,
                      "cached_rows": None if rows is None else rows.shape[0]}
    gather(rank, result, path)


def gather(rank: int, result: dict, path: str) -> None:
    """Every rank's result, written by rank 0; ends the process group."""
    everything = [None, None]
    dist.all_gather_object(everything, result)
    if rank == 0:
        with open(path, "w") as f:
            json.dump(everything, f)
    dist.destroy_process_group()


def logits_and_gradients(model, x, labels, index) -> list[torch.Tensor]:
    model.zero_grad()
    logits = model(x, index=index)
    torch.nn.functional.cross_entropy(logits, labels).backward()
    return [logits.detach()] + [p.grad.clone() for p in model.parameters()]


def readout_worker(rank: int, store: str, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2,
                            timeout=timedelta(seconds=300))
    group, _ = create_groups(2, timedelta(seconds=300))
    x = series(BATCH, LENGTH, CHANNELS).transpose(1, 2)  # [batch, channels, length]
    labels, index = torch.tensor([0, 1, 2, 1]), torch.arange(BATCH)
    result: dict = {}
    for name, parareal in READOUT_CASES.items():
        models = []
        for _ in range(2):
            torch.manual_seed(0)
            models.append(create_model(
                "ncde_parareal", num_classes=3, input_shape=(CHANNELS, LENGTH), hidden=HIDDEN,
                width=8, readout="boundaries", parareal={"num_slices": SLICES, **parareal},
            ).to(F64))
        reference, grouped = models
        grouped.block.time_group = group
        result[name] = max(largest(logits_and_gradients(grouped, x, labels, index),
                                   logits_and_gradients(reference, x, labels, index))
                           for _ in range(2))
        result[f"{name}_stats"] = [grouped.block.stats.ranks, grouped.block.stats.cache_hit_rate]
    gather(rank, result, path)


if __name__ == "__main__":
    output = sys.argv[1]
    target = readout_worker if sys.argv[2:] == ["readout"] else worker
    mp.start_processes(target, (f"{output}.store", output), nprocs=2, start_method="fork")
