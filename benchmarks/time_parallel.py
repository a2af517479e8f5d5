"""Time-parallel parareal, 2 ranks x 1 thread, against the serial fine solve, 1 process x 2 threads.

Run from the repository root:

    python benchmarks/time_parallel.py [--pairs 7]

Model: an MLP vector field (state 64, hidden 128, tanh) on a batch of 256, t in [0, 1], N = 2
slices of 32 RK4 steps each (fine), 2 RK4 steps per slice (coarse), K = 1 parareal iteration:
the fine solve dominates. Baseline: the same fine grid solved serially (one block of one slice,
64 RK4 steps) in one process with 2 threads. Candidate: the parareal block on a gloo time group
of 2 ranks, 1 thread each. Runs alternate (A B C A B C ...) after a warm-up, where C is the
same serial solve with 1 thread: on oversubscribed cores (other users' jobs) two OpenMP threads
can be far slower than one, which would flatter the parallel run, so the speedup against the
better of B and C is reported too. The script reports median ratios with min/max, the
relative error against the serial fine solve, per-rank fine, coarse, communication and wait
times, and the speedup the pipelined cost model predicts from the
measured per-slice costs. Training step = forward, backward, SGD step of block + linear head
with a mean-squared loss; two backward passes: "serial" (exact discrete adjoint, the chain
passed rank to rank) and "parareal" with 0 adjoint iterations (coarse adjoint, inexact: its
gradient error against the serial fine solve's gradient is reported).

Writes docs/benchmarks/time_parallel.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
from datetime import timedelta
from pathlib import Path
from time import perf_counter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # benchmark the working tree

import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402
import torch.multiprocessing as mp  # noqa: E402
from torch import nn  # noqa: E402

from pnode_zoo.distributed import create_groups  # noqa: E402
from pnode_zoo.ode.parareal_block import PararealODEBlock  # noqa: E402
from pnode_zoo.ode.vector_fields import MLPVectorField  # noqa: E402

OUT = ROOT / "docs" / "benchmarks" / "time_parallel"
DIM, HIDDEN, BATCH, SLICES, FINE_STEPS, COARSE_STEPS = 64, 128, 256, 2, 32, 2
RANKS = 2
CASES = ("forward", "train_serial_adjoint", "train_coarse_adjoint")


def blocks(backward: str) -> tuple[nn.Module, nn.Module]:
    """(time-parallel model, serial-fine model) with the same weights: block -> linear head."""
    torch.manual_seed(0)
    field, head = MLPVectorField(DIM, HIDDEN), nn.Linear(DIM, 1)
    parallel = PararealODEBlock(
        field, 0.0, 1.0, SLICES, coarse="rk4", coarse_steps=COARSE_STEPS, fine="rk4",
        fine_steps=FINE_STEPS, max_iters=1, tol=0.0, backward=backward, backward_max_iters=0,
    )
    serial = PararealODEBlock(
        MLPVectorField(DIM, HIDDEN), 0.0, 1.0, 1, coarse="euler", fine="rk4",
        fine_steps=SLICES * FINE_STEPS, max_iters=1, tol=0.0, backward="serial",
    )
    serial.func.load_state_dict(field.state_dict())
    serial_head = nn.Linear(DIM, 1)
    serial_head.load_state_dict(head.state_dict())
    return nn.Sequential(parallel, head), nn.Sequential(serial, serial_head)


def step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, train: bool) -> torch.Tensor:
    """A forward pass (no graph), or forward, backward and an SGD step (learning rate 0)."""
    if not train:
        with torch.no_grad():
            return model(x)
    model.zero_grad(set_to_none=True)
    out = model(x)
    (out - y).square().mean().backward()
    with torch.no_grad():  # the update's cost, not its effect: both models keep their weights
        for p in model.parameters():
            p -= 0.0 * p.grad
    return out.detach()


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def measure(rank: int, case: str, pairs: int) -> dict:
    """Alternating timings of one case; rank 0 returns the results, rank 1 an empty dict."""
    train = case != "forward"
    parallel, serial = blocks("serial" if case == "train_serial_adjoint" else "parareal")
    parallel[0].time_group = create_groups(RANKS, timedelta(seconds=300))[0]
    torch.manual_seed(1)
    x, y = torch.randn(BATCH, DIM), torch.randn(BATCH, 1)
    ratios, ratios_one, times_a, times_b, times_c, stats = [], [], [], [], [], []
    for i in range(pairs + 1):  # pair 0 is the warm-up
        dist.barrier()
        tic = perf_counter()
        out_a = step(parallel, x, y, train)
        dist.barrier()
        time_a = perf_counter() - tic
        stats.append(parallel[0].stats.summary())
        if rank == 0:
            torch.set_num_threads(RANKS)
            tic = perf_counter()
            out_b = step(serial, x, y, train)
            time_b = perf_counter() - tic
            torch.set_num_threads(1)
            tic = perf_counter()
            step(serial, x, y, train)
            time_c = perf_counter() - tic
            if i > 0:
                times_a.append(time_a)
                times_b.append(time_b)
                times_c.append(time_c)
                ratios.append(time_b / time_a)
                ratios_one.append(min(time_b, time_c) / time_a)
        dist.barrier()
    gathered: list[list[dict]] = [[] for _ in range(RANKS)]
    dist.all_gather_object(gathered, stats[1:])
    if rank != 0:
        return {}
    result = {
        "speedup_median": statistics.median(ratios), "speedup_min": min(ratios),
        "speedup_max": max(ratios), "seconds_parallel_median": statistics.median(times_a),
        "seconds_serial_median": statistics.median(times_b),
        "speedup_vs_best_serial_median": statistics.median(ratios_one),
        "speedup_vs_best_serial_min": min(ratios_one),
        "speedup_vs_best_serial_max": max(ratios_one),
        "seconds_serial_one_thread_median": statistics.median(times_c), "pairs": pairs,
        "relative_error_output": _rel(out_a, out_b),
        "per_rank": [
            {key: statistics.median(s[key] for s in per_rank)
             for key in ("time_fine", "time_coarse", "time_comm", "time_wait")}
            for per_rank in gathered
        ],
        "forward_iters": stats[-1]["forward_iters"],
    }
    if train:  # gradient error of the last step, against the serial fine solve's gradient
        grads_a = torch.cat([p.grad.flatten() for p in parallel.parameters()])
        grads_b = torch.cat([p.grad.flatten() for p in serial.parameters()])
        result["relative_error_gradient"] = _rel(grads_a, grads_b)
    return result


def unit_costs(pairs: int) -> dict[str, float]:
    """Per-slice seconds of F, G and the VJP of F, measured in one process with one thread."""
    parallel, _ = blocks("serial")
    block = parallel[0]
    torch.manual_seed(1)
    x, y = torch.randn(BATCH, DIM), torch.randn(BATCH, 1)
    fine, coarse, vjp = [], [], []
    for _ in range(pairs):
        step(parallel, x, y, train=False)
        forward = block.stats  # coarse sweep (N slices) + one batched fine solve of N slices
        fine.append(forward.time_fine / SLICES)
        coarse.append(forward.time_coarse / (2 * SLICES - 1))
        step(parallel, x, y, train=True)
        vjp.append((block.stats.time_fine - forward.time_fine) / SLICES)
    return {"fine": statistics.median(fine), "coarse": statistics.median(coarse),
            "fine_vjp": statistics.median(vjp)}


def modelled(costs: dict[str, float]) -> dict[str, float]:
    """Pipelined parareal schedule, N = P = 2, K = 1 (forward), from measured unit costs.

    Forward: serial N f; parallel f + (K + 2) c on the last rank (its coarse sweep waits for
    the previous rank's G, then F, then the correction G). Serial adjoint: the chain of N VJPs
    moves rank to rank, but each rank recomputes its F (the first part of a VJP) before the
    adjoint arrives: v + (N - 1)(v - f). Coarse adjoint: N c_v + v, with c_v ~ 3 c.
    """
    f, c, v = costs["fine"], costs["coarse"], costs["fine_vjp"]
    forward_parallel = f + 3 * c
    return {
        "forward": SLICES * f / forward_parallel,
        "train_serial_adjoint": SLICES * (f + v) / (forward_parallel + v + (SLICES - 1) * (v - f)),
        "train_coarse_adjoint": SLICES * (f + v) / (forward_parallel + v + SLICES * 3 * c),
    }


def worker(rank: int, port: int, pairs: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=RANKS, timeout=timedelta(seconds=300))
    results = {case: measure(rank, case, pairs) for case in CASES}
    if rank == 0:
        results["unit_costs"] = unit_costs(pairs)
        results["modelled_speedup"] = modelled(results["unit_costs"])
        Path(path).write_text(json.dumps(results))
    dist.destroy_process_group()


def environment(command: str) -> dict[str, str | int]:
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True,
                           text=True).stdout.strip()
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    return {"command": command, "commit": commit + ("+dirty" if dirty else ""),
            "torch": torch.__version__, "cpu": cpu, "cores": os.cpu_count() or 0,
            "threads": f"parallel: {RANKS} ranks x 1 thread; serial: 1 process x {RANKS} threads"}


def markdown(results: dict) -> str:
    env = results["environment"]
    lines = [
        "# Time-parallel parareal: 2 ranks x 1 thread vs serial fine solve, 1 process x 2 threads",
        "",
        f"Command: `{env['command']}` — commit {env['commit']}, torch {env['torch']}, "
        f"{env['cores']} cores ({env['cpu']}), {env['threads']}. The machine is shared: "
        "absolute times are noisy, the ratios come from alternating runs.",
        "",
        f"Model: MLP field (state {DIM}, hidden {HIDDEN}), batch {BATCH}, float32, "
        f"N = {SLICES} slices x {FINE_STEPS} RK4 steps (fine), {COARSE_STEPS} RK4 steps "
        "(coarse), K = 1.",
        "",
        "| case | speedup vs 2 threads, median (min–max) | vs best of 1/2 threads | modelled | "
        "serial 2 thr. s | serial 1 thr. s | parallel s | rel. error output | "
        "rel. error gradient |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        r = results[case]
        grad = f"{r['relative_error_gradient']:.1e}" if "relative_error_gradient" in r else "–"
        lines.append(
            f"| {case} | {r['speedup_median']:.2f} ({r['speedup_min']:.2f}–"
            f"{r['speedup_max']:.2f}) | {r['speedup_vs_best_serial_median']:.2f} "
            f"({r['speedup_vs_best_serial_min']:.2f}–{r['speedup_vs_best_serial_max']:.2f}) | "
            f"{results['modelled_speedup'][case]:.2f} | {r['seconds_serial_median']:.3f} | "
            f"{r['seconds_serial_one_thread_median']:.3f} | {r['seconds_parallel_median']:.3f} | "
            f"{r['relative_error_output']:.1e} | {grad} |"
        )
    lines += ["", "Per-rank seconds inside the block (medians; wait = blocked in recv):", "",
              "| case | rank | fine | coarse | comm | wait |", "|---|---|---|---|---|---|"]
    for case in CASES:
        for rank, t in enumerate(results[case]["per_rank"]):
            lines.append(f"| {case} | {rank} | {t['time_fine']:.3f} | {t['time_coarse']:.3f} | "
                         f"{t['time_comm']:.3f} | {t['time_wait']:.3f} |")
    costs = results["unit_costs"]
    lines += ["", f"Measured unit costs per slice (1 thread): F {costs['fine']:.4f} s, "
              f"G {costs['coarse']:.4f} s, VJP of F {costs['fine_vjp']:.4f} s. "
              "Modelled speedups use the pipelined schedule (see the script's `modelled`).", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7, help="timed A/B pairs after a warm-up")
    parser.add_argument("--port", type=int, default=29561)
    args = parser.parse_args()
    raw = OUT.with_suffix(".raw.json")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    mp.start_processes(worker, (args.port, args.pairs, str(raw)), nprocs=RANKS,
                       start_method="fork")
    results = json.loads(raw.read_text())
    raw.unlink()
    command = "python benchmarks/time_parallel.py" + (
        f" --pairs {args.pairs}" if args.pairs != 7 else "")
    results["environment"] = environment(command)
    OUT.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n")
    OUT.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
