"""Time-parallel parareal, 2 ranks x 1 thread, against the serial fine solve, 1 process x 2 threads.

Run from the repository root:

    python benchmarks/time_parallel.py [--pairs 7] [--batches 32 256]

Model: an MLP vector field (state 64, hidden 128, tanh) on batches of 32 and 256, t in [0, 1], N = 2
slices of 32 RK4 steps each (fine), 2 RK4 steps per slice (coarse), K = 1 parareal iteration:
the fine solve dominates. Baseline: the same fine grid solved serially (one block of one slice,
64 RK4 steps) in one process with 2 threads. Candidate: the parareal block on a gloo time group
of 2 ranks, 1 thread each. Runs alternate (A B C A B C ...) after a warm-up, where C is the
same serial solve with 1 thread: on oversubscribed cores (other users' jobs) two OpenMP threads
can be far slower than one, which would flatter the parallel run, so the speedup against the
better of B and C is reported too. The script reports median ratios with min/max, the
relative error against the serial fine solve, per-rank fine, coarse, communication and wait
times, and the speedup the pipelined cost model predicts from per-slice costs measured twice:
on one process alone, and on both ranks at once (the slowdown between them is what sharing
the two cores costs, a ceiling no parallel algorithm on this machine escapes). Training step =
forward, backward, SGD step of block + linear head with a mean-squared loss; two backward
passes: "fine_adjoint" (exact discrete adjoint, the chain passed rank to rank) and
"parareal_adjoint" with 0
adjoint iterations (coarse adjoint, inexact: its gradient error against the serial fine
solve's gradient is reported).

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
DIM, HIDDEN, SLICES, FINE_STEPS, COARSE_STEPS = 64, 128, 2, 32, 2
RANKS = 2
CASES = ("forward", "train_serial_adjoint", "train_coarse_adjoint")


def blocks(backward: str) -> tuple[nn.Module, nn.Module]:
    """(time-parallel model, serial-fine model) with the same weights: block -> linear head."""
    torch.manual_seed(0)
    field, head = MLPVectorField(DIM, HIDDEN), nn.Linear(DIM, 1)
    parallel = PararealODEBlock(
        field, 0.0, 1.0, num_slices=SLICES, coarse="rk4", coarse_steps=COARSE_STEPS, fine="rk4",
        fine_steps=FINE_STEPS, max_iters=1, tol=0.0, backward=backward, backward_max_iters=0,
    )
    serial = PararealODEBlock(
        MLPVectorField(DIM, HIDDEN), 0.0, 1.0, num_slices=1, coarse="euler", fine="rk4",
        fine_steps=SLICES * FINE_STEPS, max_iters=1, tol=0.0, backward="fine_adjoint",
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


def measure(rank: int, case: str, batch: int, pairs: int) -> dict:
    """Alternating timings of one case; rank 0 returns the results, rank 1 an empty dict."""
    train = case != "forward"
    backward = "fine_adjoint" if case == "train_serial_adjoint" else "parareal_adjoint"
    parallel, serial = blocks(backward)
    parallel[0].time_group = create_groups(RANKS, timedelta(seconds=300))[0]
    torch.manual_seed(1)
    x, y = torch.randn(batch, DIM), torch.randn(batch, 1)
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


def slice_costs(batch: int, steps: int, pairs: int) -> tuple[float, float]:
    """Seconds of one slice (length 1/N, ``steps`` RK4 steps, one batch) on one thread: the
    solve, and its VJP (recomputation and backward); medians after a warm-up."""
    torch.manual_seed(0)
    block = PararealODEBlock(
        MLPVectorField(DIM, HIDDEN), 0.0, 1.0 / SLICES, num_slices=1, coarse="euler", fine="rk4",
        fine_steps=steps, max_iters=1, tol=0.0, backward="fine_adjoint",
    )
    model = nn.Sequential(block, nn.Linear(DIM, 1))
    x, y = torch.randn(batch, DIM), torch.randn(batch, 1)
    solve, vjp = [], []
    for _ in range(pairs + 1):
        step(model, x, y, train=False)
        solve.append(block.stats.time_fine)
        step(model, x, y, train=True)  # the block's stats of one call include its backward
        vjp.append(block.stats.time_fine - solve[-1])
    return statistics.median(solve[1:]), statistics.median(vjp[1:])


def unit_costs(batch: int, pairs: int) -> dict[str, float]:
    """Per-slice seconds of F, G and their VJPs, one thread."""
    fine, fine_vjp = slice_costs(batch, FINE_STEPS, pairs)
    coarse, coarse_vjp = slice_costs(batch, COARSE_STEPS, pairs)
    return {"fine": fine, "fine_vjp": fine_vjp, "coarse": coarse, "coarse_vjp": coarse_vjp}


def modelled(costs: dict[str, float], serial_seconds: dict[str, float]) -> dict[str, float]:
    """Pipelined parareal schedule, N = P = 2, K = 1, from measured per-slice costs, against
    the measured serial time of each case.

    Forward: f + (K + 2) c on the last rank (its coarse sweep waits for the previous rank's G,
    then F, then the correction G). Serial adjoint: the chain of N VJPs moves rank to rank, but
    each rank recomputes its F (the first part of a VJP) before the adjoint arrives:
    v + (N - 1)(v - f). Coarse adjoint: v + N c_v (the VJPs of G pass rank to rank).
    """
    f, c, v, c_v = costs["fine"], costs["coarse"], costs["fine_vjp"], costs["coarse_vjp"]
    forward = f + 3 * c
    parallel = {
        "forward": forward,
        "train_serial_adjoint": forward + v + (SLICES - 1) * (v - f),
        "train_coarse_adjoint": forward + v + SLICES * c_v,
    }
    return {case: serial_seconds[case] / parallel[case] for case in CASES}


def worker(rank: int, port: int, batch: int, pairs: int, path: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=RANKS, timeout=timedelta(seconds=300))
    results = {case: measure(rank, case, batch, pairs) for case in CASES}
    # Unit costs twice: on rank 0 alone, then on both ranks at once (each its own solve, no
    # communication). Their ratio is what sharing the cores costs: on virtual CPUs two
    # single-thread jobs can each run slower than one alone, whatever the algorithm.
    alone = unit_costs(batch, pairs) if rank == 0 else {}
    dist.barrier()
    shared = unit_costs(batch, pairs)
    dist.barrier()
    if rank == 0:
        serial = {case: min(results[case]["seconds_serial_median"],
                            results[case]["seconds_serial_one_thread_median"]) for case in CASES}
        results["unit_costs"] = {"alone": alone, "shared": shared}
        results["core_sharing_slowdown"] = shared["fine"] / alone["fine"]
        results["modelled_speedup"] = {
            "ideal_cores": modelled(alone, serial), "shared_cores": modelled(shared, serial)}
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


def markdown(env: dict, per_batch: dict[str, dict]) -> str:
    lines = [
        "# Time-parallel parareal: 2 ranks x 1 thread vs serial fine solve, 1 process x 2 threads",
        "",
        f"Command: `{env['command']}` — commit {env['commit']}, torch {env['torch']}, "
        f"{env['cores']} cores ({env['cpu']}), {env['threads']}. Runs alternate, so the "
        "ratios hold even when other jobs share the machine.",
        "",
        f"Model: MLP field (state {DIM}, hidden {HIDDEN}), float32, N = {SLICES} slices x "
        f"{FINE_STEPS} RK4 steps (fine), {COARSE_STEPS} RK4 steps (coarse), K = 1.",
    ]
    for batch, results in per_batch.items():
        lines += ["", f"## Batch {batch}", ""] + _batch_tables(results)
    return "\n".join(lines) + "\n"


def _batch_tables(results: dict) -> list[str]:
    lines = [
        "| case | speedup vs 2 threads, median (min–max) | vs best of 1/2 threads | "
        "modelled, ideal cores | modelled, shared cores | serial 2 thr. s | serial 1 thr. s | "
        "parallel s | rel. error output | rel. error gradient |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in CASES:
        r = results[case]
        grad = f"{r['relative_error_gradient']:.1e}" if "relative_error_gradient" in r else "–"
        lines.append(
            f"| {case} | {r['speedup_median']:.2f} ({r['speedup_min']:.2f}–"
            f"{r['speedup_max']:.2f}) | {r['speedup_vs_best_serial_median']:.2f} "
            f"({r['speedup_vs_best_serial_min']:.2f}–{r['speedup_vs_best_serial_max']:.2f}) | "
            f"{results['modelled_speedup']['ideal_cores'][case]:.2f} | "
            f"{results['modelled_speedup']['shared_cores'][case]:.2f} | "
            f"{r['seconds_serial_median']:.3f} | "
            f"{r['seconds_serial_one_thread_median']:.3f} | {r['seconds_parallel_median']:.3f} | "
            f"{r['relative_error_output']:.1e} | {grad} |"
        )
    lines += ["", "Per-rank seconds inside the block (medians; wait = blocked in recv):", "",
              "| case | rank | fine | coarse | comm | wait |", "|---|---|---|---|---|---|"]
    for case in CASES:
        for rank, t in enumerate(results[case]["per_rank"]):
            lines.append(f"| {case} | {rank} | {t['time_fine']:.3f} | {t['time_coarse']:.3f} | "
                         f"{t['time_comm']:.3f} | {t['time_wait']:.3f} |")
    alone, shared = results["unit_costs"]["alone"], results["unit_costs"]["shared"]
    lines += [
        "", "Measured per-slice costs (1 thread; modelled speedups use the pipelined schedule "
        "of the script's `modelled` against the faster serial run):", "",
        "| | F | G | VJP of F | VJP of G |", "|---|---|---|---|---|",
        *(f"| {label} | {c['fine']:.4f} s | {c['coarse']:.4f} s | {c['fine_vjp']:.4f} s | "
          f"{c['coarse_vjp']:.4f} s |"
          for label, c in (("one process alone", alone), ("both ranks at once", shared))), "",
        f"Sharing the cores slows each single-thread fine solve by "
        f"{results['core_sharing_slowdown']:.2f}x: run side by side, two independent jobs give "
        f"{2 / results['core_sharing_slowdown']:.2f}x the throughput of one after the other, "
        "which bounds any two-way split of the work on this machine.",
    ]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=7, help="timed A/B pairs after a warm-up")
    parser.add_argument("--batches", type=int, nargs="+", default=[32, 256])
    parser.add_argument("--port", type=int, default=29561)
    args = parser.parse_args()
    raw = OUT.with_suffix(".raw.json")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    per_batch = {}
    for i, batch in enumerate(args.batches):  # a fresh port each time: no TIME_WAIT clash
        mp.start_processes(worker, (args.port + i, batch, args.pairs, str(raw)), nprocs=RANKS,
                           start_method="fork")
        per_batch[str(batch)] = json.loads(raw.read_text())
        raw.unlink()
    command = "python benchmarks/time_parallel.py" + (
        f" --pairs {args.pairs}" if args.pairs != 7 else "") + (
        f" --batches {' '.join(map(str, args.batches))}" if args.batches != [32, 256] else "")
    env = environment(command)
    OUT.with_suffix(".json").write_text(json.dumps({"environment": env, "batches": per_batch},
                                                   indent=2) + "\n")
    OUT.with_suffix(".md").write_text(markdown(env, per_batch))
    print(markdown(env, per_batch))


if __name__ == "__main__":
    main()
