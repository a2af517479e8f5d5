"""The ACSF1 neural CDE on P = 2..1024 ranks, modelled from costs and messages measured here.

Run from the repository root (about 5 minutes on a quiet 2-core machine):

    python benchmarks/ncde_cost_model.py [--pairs 5] [--number 3] [--max-ranks 1024]
        [--task acsf1] [--ckpt CHECKPOINT]

Model: configs/TASK/ncde_parareal.yaml's twin (its field, path, coarse propagator, options and
batch) and configs/TASK/ncde.yaml's ``cdeint`` model with the same weights (seeded
initialisation, or a trained Lightning checkpoint of either with ``--ckpt``: K depends on the
field), on the first training batch of the config's data.

1. Messages (measured): gloo ping-pong between 2 ranks x 1 thread, fitted by latency +
   bytes / bandwidth (``comm_model.fit_hockney``).
2. Calibration (measured, alternating rounds): ``cdeint``, and the twin cold (the coarse
   sweep) and warm (the cache of the previous call, whose weights were one Adam-sized step
   away: every weight moved by the config's lr), forward and training step, on 1 process x 1
   thread and on 2 ranks x 1 thread, at N = 2 (``--calibration-slices``): one chunk per rank,
   as in the scaling below, so the P = 2 run checks the model where it is used. (With several
   chunks per rank the model, which charges a batched solve of m chunks m times one chunk,
   overstates a rank's time: with the zoo's small field a batched step costs mostly
   overhead, nearly independent of m.)
3. Scaling (modelled): N = P chunks, one per rank; the series padded by repeating its last
   observation to a multiple of N steps (more steps than ``cdeint`` takes once P does not
   divide them); per-chunk seconds of F, G and their VJPs measured at that N (1 thread,
   ``comm_model.measure_slice``, median of 3); K cold and warm measured by running the twin
   at that N on one process with the config's tolerance, with the errors against ``cdeint``
   on the padded series; the time from ``benchmarks/_schedule.py``: as configured (the
   residual all-reduced after every iteration), cold and warm (``warm_seconds`` composes the
   warm start), and the cold start's K fixed (``tol: 0``, pipelined); speed-ups over
   ``cdeint`` on the unpadded series measured in step 2 (1 thread). Per-call work outside the
   propagators (the path's table, head, cache) is left out; the P = 2 check shows its weight.

Writes docs/benchmarks/ncde_cost_model.{json,md}.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from pathlib import Path

import _common
import comm_model
import ncde_length
import torch
import torch.distributed as dist
import yaml
from _schedule import CommCosts, SliceCosts, modelled_time
from torch import nn

from pnode_zoo.data import UCRDataModule
from pnode_zoo.distributed import create_groups
from pnode_zoo.models import create_model

NAME = "ncde_cost_model"
RANKS = [2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]
#: the calibration's candidates (``ncde_length.calls``): 1 thread, or 2 ranks x 1 thread
CANDIDATES = [("cdeint@1", "plain", 1), ("cold@1", "cold", 1), ("warm@1", "warm", 1),
              ("cold@2r", "cold", 0), ("warm@2r", "warm", 0)]
#: bytes of the residual in the non-finite check after a warm start (as in the schedule)
RESIDUAL_BYTES = 8


# --- the modelled warm start ---------------------------------------------------------------

def warm_seconds(costs: SliceCosts, num_slices: int, ranks: int, iters: int,
                 comm: CommCosts | None = None, train: bool = False) -> float:
    """Modelled seconds of a tolerance-stopped call started from a warm start (classic
    schedule, every boundary gathered at the end, as ``NeuralCDEBlock`` does with its cache).

    ``benchmarks/_schedule.py`` models the cold start. After its coarse sweep and the residual's
    all-reduce every rank's clock is the same, so the iterations (and a training step's
    backward) cost ``cold(K) - cold(0)`` whatever came before; a warm start replaces the sweep
    by each rank's coarse step of its own chunks in one batch (the coarse terms of the guess)
    and the same all-reduce. The backward is the cold one, whose last level is the chain of
    coarse VJPs through the sweep: a warm start's is a batched VJP without messages, so the
    training step is overestimated by at most that chain.

    Args:
        costs: per-slice costs (see ``SliceCosts``), overhead included.
        num_slices: N, a multiple of ``ranks``.
        ranks: P.
        iters: K, the iterations of the forward.
        comm: message costs (None: free).
        train: a training step (forward and ``unrolled`` backward), not a forward pass.
    """
    comm = comm or CommCosts()

    def cold(k: int, backward: bool) -> float:
        return modelled_time(costs, num_slices, ranks, k, comm, train=backward,
                             trajectory=True).seconds

    per_rank = num_slices // ranks
    start = per_rank * costs.coarse + comm.all_reduce(RESIDUAL_BYTES, ranks)
    gather = comm.all_gather(per_rank * costs.state_bytes, ranks)
    return cold(iters, train) - cold(0, False) + start + gather + costs.overhead


def seconds(costs: SliceCosts, num_slices: int, ranks: int, iters: int, comm: CommCosts | None,
            train: bool, warm: bool) -> float:
    """Modelled seconds of a cold (coarse sweep, U_N broadcast) or warm call."""
    if warm:
        return warm_seconds(costs, num_slices, ranks, iters, comm, train)
    return modelled_time(costs, num_slices, ranks, iters, comm, train=train).seconds


# --- the task's batch and models -----------------------------------------------------------

def task_batch(task: str) -> tuple[torch.Tensor, int, int]:
    """The first training batch of configs/TASK/ncde_parareal.yaml's data, [batch, channels,
    length]; the number of classes; the length."""
    config = yaml.safe_load((_common.ROOT / f"configs/{task}/ncde_parareal.yaml").read_text())
    data = UCRDataModule(**config["data"]["init_args"])
    data.setup("fit")
    x = next(iter(data.train_dataloader()))[0]
    return x, data.num_classes, data.length


def padded(x: torch.Tensor, steps: int) -> torch.Tensor:
    """``x`` with its last observation repeated up to ``steps`` + 1 observations."""
    extra = steps + 1 - x.shape[-1]
    return torch.cat([x, x[..., -1:].expand(*x.shape[:-1], extra)], dim=-1)


def models(task: str, classes: int, channels: int, length: int, slices: int,
           state: dict) -> dict[str, nn.Module]:
    """``plain``, ``cold`` and ``warm`` on series of ``channels`` x ``length`` observations,
    ``slices`` chunks, with the weights ``state``."""
    plain_args, twin_args, _, _ = ncde_length.task_models(task)
    shape = {"num_classes": classes, "input_shape": (channels, length)}
    parareal = {**twin_args.get("parareal", {}), "num_slices": slices}
    out = {"plain": create_model("ncde", **shape, **plain_args)}
    for name, warm in (("cold", False), ("warm", True)):
        out[name] = create_model("ncde_parareal", **shape, **{
            **twin_args, "parareal": {**parareal, "warm_start": warm}})
    for model in out.values():
        model.load_state_dict(state)
    return out


def initial_state(task: str, classes: int, shape: tuple[int, int], ckpt: str | None) -> dict:
    """Seeded initial weights, or a trained checkpoint's (``net.*`` of a Lightning checkpoint,
    read with ``weights_only=True``)."""
    plain_args, _, _, _ = ncde_length.task_models(task)
    torch.manual_seed(0)
    state = create_model("ncde", num_classes=classes, input_shape=shape,
                         **plain_args).state_dict()
    if ckpt is None:
        return state
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)["state_dict"]
    except (OSError, KeyError, RuntimeError) as err:
        raise SystemExit(f"error: cannot read weights from {ckpt}: {err}") from err
    # the trained field and initial map; the seeded head (ncde_length.task_models' final-state
    # head, not the config's readout) takes no part in K
    trained = {k.removeprefix("net."): v for k, v in saved.items()
               if k.startswith("net.") and not k.startswith("net.head.")}
    if set(trained) != {k for k in state if not k.startswith("head.")}:
        raise SystemExit(f"error: {ckpt} holds no weights of the config's neural CDE")
    return {**state, **trained}


def block_input(model: nn.Module, x: torch.Tensor, **kwargs) -> torch.Tensor:
    """z0, the block's input for ``x``, captured by a call without a graph (which also leaves
    the block's fields for this batch, as ``comm_model.measure_slice`` needs)."""
    captured = {}

    def capture(module: nn.Module, args: tuple) -> None:
        captured["z0"] = args[1]

    hook = model.block.register_forward_pre_hook(capture)
    with torch.no_grad():
        model(x, **kwargs)
    hook.remove()
    return captured["z0"].detach()


def chunk_costs(block: nn.Module, z0: torch.Tensor, number: int, repeats: int = 3) -> dict:
    """``comm_model.measure_slice`` of one chunk, the median of ``repeats`` measurements (a
    shared machine's spikes do not become the model's costs)."""
    runs = [comm_model.measure_slice(block, z0, number) for _ in range(repeats)]
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


# --- measured: messages and the calibration on 2 ranks -------------------------------------

def calibration_world(rank: int, spec: dict) -> dict:
    """Ping-pong, then alternating rounds of every candidate at the config's N (rank 1 joins
    the 2-rank ones), then per-chunk costs on rank 0 alone."""
    group = create_groups(2)[0]
    out = {"ping_pong": comm_model.ping_pong(rank, comm_model.SIZES[:6], 5, spec["pairs"])}
    x = spec["x"]
    built = models(spec["task"], spec["classes"], x.shape[1], spec["length"],
                   spec["calibration_slices"], spec["state"])
    two_ranks = [name for name, _, threads in CANDIDATES if threads == 0]
    for case in ncde_length.CASES:
        fns = ncde_length.calls(built, case, x, spec["lr"], group,
                                None if rank == 0 else two_ranks, CANDIDATES)
        times: dict[str, list[float]] = {name: [] for name in fns}
        iters: dict[str, list[int]] = {name: [] for name in fns if name != "cdeint@1"}
        for i in range(spec["pairs"] + 1):  # round 0 warms up
            for name, _, _ in CANDIDATES:
                dist.barrier()
                if name in fns:
                    elapsed = ncde_length.seconds(fns[name], 1)
                    if i > 0:
                        times[name].append(elapsed)
                        if name in iters:
                            iters[name].append(fns[name].model.block.stats.forward_iters)
        out[case] = {"times": times, "K": iters}
        dist.barrier()
    if rank == 0:
        twin = built["cold"]
        out["slice_costs"] = chunk_costs(twin.block, block_input(twin, x), spec["number"])
    return out


# --- modelled: the scaling table -----------------------------------------------------------

def scaling(spec: dict, x: torch.Tensor, state: dict, comm: CommCosts, serial: dict,
            ranks: list[int]) -> list[dict]:
    """One row per P: N = P chunks, K and errors measured on one process, per-chunk costs
    measured at that N, modelled seconds and speed-ups over ``serial``."""
    steps0 = spec["length"] - 1
    _, _, _, lr = ncde_length.task_models(spec["task"])
    index = torch.arange(x.shape[0])
    rows = []
    for p in ranks:
        steps = math.ceil(steps0 / p) * p
        xp = padded(x, steps)
        built = models(spec["task"], spec["classes"], x.shape[1], steps + 1, p, state)
        with torch.no_grad():
            reference = built["plain"](xp)
            cold = built["cold"](xp)
            k_cold = built["cold"].block.stats.forward_iters
            move = ncde_length.Call(built["warm"], "forward", xp, torch.zeros_like(index),
                                    lr, index)
            move()  # the cache: boundaries at weights one Adam-sized step away
            move.move()  # back to ``state``
            warm = built["warm"](xp, index=index)
            k_warm = built["warm"].block.stats.forward_iters
        block = built["cold"].block
        measured = chunk_costs(block, block_input(built["cold"], xp), spec["number"])
        row = {"P": p, "N": p, "steps": steps, "steps_per_chunk": steps // p,
               "K_cold": k_cold, "K_warm": k_warm,
               "error_cold": ncde_length.relative(cold, reference),
               "error_warm": ncde_length.relative(warm, reference), "measured": measured}
        for case in ncde_length.CASES:
            train = case == "train"
            costs = comm_model.slice_costs(measured, train, block.options.recompute)
            for start, k in (("cold", k_cold), ("warm", k_warm)):
                free = seconds(costs, p, p, k, None, train, start == "warm")
                with_comm = seconds(costs, p, p, k, comm, train, start == "warm")
                row[f"{case}_{start}"] = {
                    "seconds_free": free, "seconds_comm": with_comm,
                    "speedup_free": serial[case] / free,
                    "speedup_comm": serial[case] / with_comm}
            pipelined = modelled_time(costs, p, p, k_cold, comm, train=train,
                                      pipelined=True).seconds
            row[f"{case}_cold"].update(seconds_pipelined=pipelined,
                                       speedup_pipelined=serial[case] / pipelined)
        rows.append(row)
        print(f"P = {p}: K cold {k_cold}, warm {k_warm}, forward warm "
              f"{row['forward_warm']['speedup_comm']:.2f}x", flush=True)
    return rows


def calibrate(ranks_out: list[dict], spec: dict, comm: CommCosts) -> dict:
    """Medians of the calibration, and the P = 2 model beside the 2-rank measurement."""
    rank0, rank1 = ranks_out
    measured, n = rank0["slice_costs"], spec["calibration_slices"]
    out: dict = {"rows": []}
    for case in ncde_length.CASES:
        train = case == "train"
        times = rank0[case]["times"]
        for name in rank1[case]["times"]:
            times[name] = [max(a, b) for a, b in
                           zip(times[name], rank1[case]["times"][name], strict=True)]
        costs = comm_model.slice_costs(measured, train, spec["recompute"])
        for start in ("cold", "warm"):
            k = math.ceil(_median(rank0[case]["K"][f"{start}@2r"]))
            model = seconds(costs, n, 2, k, comm, train, start == "warm")
            measured_2 = _median(times[f"{start}@2r"])
            out["rows"].append({
                "case": case, "start": start, "K": k, "p1_measured": _median(times[f"{start}@1"]),
                "p2_measured": measured_2, "p2_modelled": model,
                "cdeint": _median(times["cdeint@1"])})
    out["serial"] = {case: _median(rank0[case]["times"]["cdeint@1"])
                     for case in ncde_length.CASES}
    return out


def _median(values: list[float]) -> float:
    return _common.spread(values)["median"]


# --- output --------------------------------------------------------------------------------

def markdown(env: dict, result: dict) -> str:
    spec, comm, cal = result["spec"], result["comm"], result["calibration"]
    n0, length = spec["calibration_slices"], spec["length"]
    lines = [
        f"# Modelled scaling of the {spec['task'].upper()} neural CDE on P = 2..1024 ranks", "",
        _common.header(env), "",
        f"Model: configs/{spec['task']}/ncde_parareal.yaml (`ncde_parareal`, arch_args "
        f"`{json.dumps(spec['twin_args'])}`) and ncde.yaml (`torchcde.cdeint`), "
        + ("seeded initial weights" if spec["ckpt"] is None else f"weights of {spec['ckpt']}")
        + f"; the first training batch ({spec['batch']} series of {length} observations).", "",
        "**Measured here:** message costs (gloo ping-pong, 2 ranks x 1 thread: latency "
        f"{comm['latency'] * 1e6:.1f} µs, bandwidth {comm['bandwidth'] / 1e9:.2f} GB/s); "
        "`cdeint`'s forward and training step on the unpadded series, 1 thread (the serial "
        f"baseline: {cal['serial']['forward']:.3f} s and {cal['serial']['train']:.3f} s); "
        "at every N: the per-chunk seconds of F, G and their VJPs (1 thread, one "
        "chunk of the batch), and K cold and warm (the twin run at that N on one process, "
        f"tol {spec['tol']:g}; warm: from the boundaries of weights one Adam-sized step away, "
        f"each weight moved by the lr {spec['lr']:g}).", "",
        "**Modelled:** one chunk per rank (N = P), the series padded by repeating its last "
        "observation to a multiple of N steps (the twin then takes more steps than `cdeint`); "
        "the schedule as configured (`benchmarks/_schedule.py`, classic: with a tolerance the "
        "residual is all-reduced after the sweep and after every iteration, so every iteration "
        "waits for the whole chain of coarse corrections, one message per rank boundary); the "
        "warm start composed from it (`warm_seconds`: the sweep replaced by each rank's "
        "batched coarse step and an all-reduce, every boundary all-gathered at the end; its "
        "backward charged the cold start's chain of coarse VJPs, an overestimate); each rank "
        "on a core of its own at the per-chunk costs measured on one thread; K as measured on "
        "one process (the ranks compute the same iterates); per-call work outside the "
        "propagators (the path's table, head, loss, cache) left out. *Free*: messages cost "
        "nothing. *Fixed K, pipelined*: the cold start's K run without a tolerance (`tol: 0`: "
        "the residuals reduced once at the end, so ranks run ahead; the same iterates, hence "
        "the same output), for the cold start only (the schedule module pipelines from the "
        "coarse sweep).", "",
        f"## Calibration (measured, N = {n0}, medians of {spec['pairs']} rounds)", "",
        "| call | start | K | 1 process s | 2 ranks: measured s | modelled s | modelled / "
        "measured | cdeint s |", "|---|---|---|---|---|---|---|---|",
    ]
    for r in cal["rows"]:
        lines.append(
            f"| {r['case']} | {r['start']} | {r['K']} | {r['p1_measured']:.3f} | "
            f"{r['p2_measured']:.3f} | {r['p2_modelled']:.3f} | "
            f"{r['p2_modelled'] / r['p2_measured']:.2f} | {r['cdeint']:.3f} |")
    lines += [
        "", "## Scaling (modelled)", "",
        "Speed-up over `cdeint` on one core: *free* / *with messages* (as configured), and "
        "the cold start's K fixed and pipelined (with messages).", "",
        "| P = N | steps (per chunk) | K cold | K warm | error cold | error warm | forward cold "
        "| forward warm | forward, fixed K pipelined | training step cold | training step warm "
        "| training step, fixed K pipelined |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["scaling"]:
        cells = [f"{r[f'{case}_{start}']['speedup_free']:.2f} / "
                 f"{r[f'{case}_{start}']['speedup_comm']:.2f}" for case in ncde_length.CASES
                 for start in ("cold", "warm")]
        cells.insert(2, f"{r['forward_cold']['speedup_pipelined']:.2f}")
        cells.append(f"{r['train_cold']['speedup_pipelined']:.2f}")
        lines.append(
            f"| {r['P']} | {r['steps']} ({r['steps_per_chunk']}) | {r['K_cold']} | "
            f"{r['K_warm']} | {r['error_cold']:.1e} | {r['error_warm']:.1e} | "
            + " | ".join(cells) + " |")
    lines += ["", "Errors: the logits' relative error against `cdeint` on the same padded "
              "series and weights. Per-chunk seconds: the JSON file.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--pairs", type=int, default=5, help="measured rounds after a warm-up")
    parser.add_argument("--number", type=int, default=3, help="calls per per-chunk timing")
    parser.add_argument("--task", default="acsf1", help="configs/TASK/ncde*.yaml")
    parser.add_argument("--max-ranks", type=int, default=RANKS[-1], help="largest modelled P")
    parser.add_argument("--ckpt", help="a Lightning checkpoint of the task's neural CDE")
    parser.add_argument("--calibration-slices", type=int, default=2,
                        help="N of the measured 1- and 2-rank runs (even)")
    parser.add_argument("--length", type=int,
                        help="the series' first LENGTH observations only (a trial at toy size)")
    args = parser.parse_args()
    config = _common.ROOT / f"configs/{args.task}/ncde_parareal.yaml"
    if not config.exists():
        parser.error(f"--task: no {config.relative_to(_common.ROOT)}")
    if args.ckpt and not Path(args.ckpt).is_file():
        parser.error(f"--ckpt: no file {args.ckpt}")
    env = _common.environment("1 thread per process; the 2-rank runs share the machine",
                              args.allow_dirty)
    tic = time.perf_counter()
    torch.set_num_threads(1)
    _, twin_args, _, lr = ncde_length.task_models(args.task)
    x, classes, length = task_batch(args.task)
    if args.length:
        if not 3 <= args.length <= length:
            parser.error(f"--length must be between 3 and {length}")
        x, length = x[..., : args.length], args.length
    state = initial_state(args.task, classes, (x.shape[1], length), args.ckpt)
    options = twin_args.get("parareal", {})
    spec = {"task": args.task, "pairs": args.pairs, "number": args.number, "lr": lr,
            "classes": classes, "length": length, "batch": x.shape[0],
            "calibration_slices": args.calibration_slices, "tol": options.get("tol"),
            "recompute": options.get("recompute", True), "twin_args": twin_args,
            "ckpt": args.ckpt}
    if args.calibration_slices < 2 or args.calibration_slices % 2 or (
            (length - 1) % args.calibration_slices):
        parser.error(f"--calibration-slices must be even and divide the {length - 1} steps")
    ranks_out = _common.run_ranks(calibration_world, ({**spec, "x": x, "state": state},))
    rows = ranks_out[0]["ping_pong"]
    comm = comm_model.fit_hockney([r["bytes"] for r in rows], [r["median"] for r in rows])
    calibration = calibrate(ranks_out, spec, comm)
    ranks = [p for p in RANKS if p <= args.max_ranks]
    result = {"spec": spec, "comm": dataclasses.asdict(comm), "ping_pong": rows,
              "calibration": calibration,
              "scaling": scaling(spec, x, state, comm, calibration["serial"], ranks)}
    result["seconds"] = time.perf_counter() - tic
    text = markdown(env, result)
    _common.write_results(NAME, {"environment": env, **result}, text)
    print(text)


if __name__ == "__main__":
    main()
