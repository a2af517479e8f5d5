"""The parareal schedule with measured communication, modelled for P = 2..1024 ranks.

Run from the repository root:

    python benchmarks/comm_model.py [--pairs 5] [--number 2]
    python benchmarks/comm_model.py --config configs/TASK/node_parareal.yaml   # a zoo model

1. Messages: gloo ping-pong between 2 ranks (1 thread each) over message sizes; the one-way
   time is fitted by latency + bytes / bandwidth; the residual's all-reduce and the state's
   broadcast are timed beside what the model's collective formulas give for them.
2. Calibration: per-slice seconds of F, G and their VJPs (``_schedule.py``'s
   inputs) are measured, on rank 0 alone and on both ranks at once, alternating with the
   parareal block measured on 1 process and on 2 ranks (forward, and training step with the
   ``unrolled`` gradient). The P = 1 run gives the per-call overhead outside the propagators;
   the P = 2 run checks the model (modelled over measured, per round).
3. Scaling (modelled): the same fine solve cut into N = P slices (at least the measured N),
   K measured by running the block at that N on one process with the tolerance, the time
   modelled with the measured per-slice costs and messages: the block's schedule as configured
   (with a tolerance, the residual all-reduced after every iteration) and the same K fixed
   (pipelined), beside the communication-free figure, as speedups over the serial fine solve
   on one core.

With ``--config`` the model is a zoo config's: its parareal block and one training batch (the
block's input captured on the way), per-slice costs measured here on one thread, messages
from the last default run's JSON (``--comm`` to re-measure); the table goes to
docs/benchmarks/comm_model_<config name>.{json,md}. From Python: ``model_block(block, x0,
comm)``.

Writes docs/benchmarks/comm_model.{json,md,png}.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pickle
import statistics
import time
from pathlib import Path

import _common
import torch
import torch.distributed as dist
from _mlp import Setup, Step
from _schedule import CommCosts, SliceCosts, modelled_time
from torch import nn

from pnode_zoo.distributed import create_groups
from pnode_zoo.ode import PararealODEBlock
from pnode_zoo.ode.parareal.problem import (
    Linearization,
    ParamGrads,
    coarse_step,
    fine_solve,
    make_problem,
)

NAME = "comm_model"
SIZES = [8, 64, 512, 4096, 32768, 262144, 2097152, 16777216]  # bytes per message
RANKS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024]


# --- messages ------------------------------------------------------------------------------

def ping_pong(rank: int, sizes: list[int], number: int, pairs: int) -> list[dict]:
    """One-way seconds per message size (half a round trip), ``pairs`` timings of ``number``
    round trips each after a warm-up; call on both ranks of a 2-rank world."""
    rows = []
    for size in sizes:
        buffer = torch.zeros(max(size // 4, 1))
        other = 1 - rank

        def trip(buffer=buffer, other=other) -> None:
            if rank == 0:
                dist.send(buffer, other)
                dist.recv(buffer, other)
            else:
                dist.recv(buffer, other)
                dist.send(buffer, other)

        times = []
        for _ in range(pairs):
            dist.barrier()
            times.append(_common.timed(trip, number) / 2)
        rows.append({"bytes": buffer.numel() * 4, **_common.spread(times)})
    return rows


def collectives(rank: int, state_bytes: int, number: int, pairs: int) -> dict:
    """Seconds of the time group's collectives on 2 ranks: the residual's max-all-reduce
    (8 bytes) and a broadcast of one state."""
    scalar, state = torch.zeros(1, dtype=torch.float64), torch.zeros(max(state_bytes // 4, 1))
    ops = {
        "all_reduce_8B": lambda: dist.all_reduce(scalar, dist.ReduceOp.MAX),
        "broadcast_state": lambda: dist.broadcast(state, 1),
    }
    out = {}
    for name, op in ops.items():
        times = []
        for _ in range(pairs):
            dist.barrier()
            times.append(_common.timed(op, number))
        out[name] = _common.spread(times)
    return out


def fit_hockney(sizes: list[float], seconds: list[float]) -> CommCosts:
    """Latency and bandwidth of one-way times t(n) = latency + n / bandwidth, fitted by least
    squares in relative error (small and large messages weigh alike).

    Args:
        sizes: message sizes in bytes.
        seconds: one-way seconds of each.
    """
    a = torch.tensor([[1 / t, n / t] for n, t in zip(sizes, seconds, strict=True)],
                     dtype=torch.float64)
    latency, inverse = torch.linalg.lstsq(a, torch.ones(len(sizes), 1, dtype=torch.float64)
                                          ).solution.flatten().tolist()
    if latency <= 0 or inverse <= 0:  # noise: the smallest message's time, the largest's rate
        pairs = sorted(zip(sizes, seconds, strict=True))
        small, large = pairs[0], pairs[-1]
        latency = small[1]
        inverse = max(large[1] - latency, 1e-12) / large[0]
    return CommCosts(latency=latency, bandwidth=1 / inverse)


# --- per-slice costs -----------------------------------------------------------------------

def measure_slice(block: PararealODEBlock, x0: torch.Tensor, number: int,
                  threads: int = 1) -> dict[str, float]:
    """Seconds of one slice's F and G at ``x0`` (the block's own seams): without a graph, with
    one kept, and the pull-back through each; plus the message and gradient sizes in bytes."""
    options = block.options
    # the block's own fields: a subclass's may read more than func (a neural CDE's path, set
    # by its last forward call, whose batch x0 must be)
    fields = block._fields
    times = torch.linspace(block.t0, block.t1, block.num_slices + 1, dtype=torch.float64)
    problem = make_problem(fields, times, options, x0, coarse_fields=block._coarse_fields)
    one, state = range(0, 1), x0.detach()[None]
    params = fields.parameters()
    out: dict[str, float] = {}
    for kind in ("fine", "coarse"):
        with torch.no_grad():
            solve = ((lambda: fine_solve(problem, one, state)) if kind == "fine"
                     else (lambda: coarse_step(problem, 0, state[0])))
            out[kind] = _common.timed(solve, number, threads)

        def graph(kind=kind) -> Linearization:
            return Linearization(problem, kind, one, state, wrt_state=True,
                                 wrt_params=bool(params), batched=kind == "fine",
                                 phase="forward")

        out[f"{kind}_graph"] = _common.timed(graph, number, threads)
        run, grads = graph(), ParamGrads(problem) if params else None
        cotangent = torch.ones_like(run.out)
        out[f"{kind}_pull"] = _common.timed(lambda run=run, c=cotangent, g=grads:
                                            run.pull(c, g, keep=True), number, threads)
    out["state_bytes"] = x0.numel() * x0.element_size()
    out["param_bytes"] = sum(p.numel() * p.element_size() for p in params)
    return out


def slice_costs(measured: dict[str, float], train: bool, recompute: bool = True,
                overhead: float = 0.0) -> SliceCosts:
    """The schedule's inputs for a forward pass or a training step from ``measure_slice``.

    With ``recompute`` the training step's solves run without a graph and each VJP re-runs its
    propagator; without, the solves keep their graph and a VJP is the pull-back alone.
    """
    m = measured
    sizes = {"state_bytes": int(m["state_bytes"]), "param_bytes": int(m["param_bytes"])}
    if not train:
        return SliceCosts(m["fine"], m["coarse"], overhead=overhead, **sizes)
    if recompute:
        return SliceCosts(m["fine"], m["coarse"], m["fine_graph"] + m["fine_pull"],
                          m["coarse_graph"] + m["coarse_pull"], overhead=overhead, **sizes)
    return SliceCosts(m["fine_graph"], m["coarse_graph"], m["fine_pull"], m["coarse_pull"],
                      overhead=overhead, **sizes)


def serial_seconds(measured: dict[str, float], num_slices: int, train: bool) -> float:
    """The serial fine solve from the same per-slice costs: N F (forward), or N times F with
    its graph and the pull-back (backprop through the fine solve)."""
    m = measured
    return num_slices * (m["fine_graph"] + m["fine_pull"] if train else m["fine"])


def modelled(costs: SliceCosts, num_slices: int, ranks: int, iters: int, comm: CommCosts | None,
             train: bool, pipelined: bool = False, trajectory: bool = False) -> float:
    """Modelled seconds of one call (see ``_schedule.py``)."""
    return modelled_time(costs, num_slices, ranks, iters, comm, train=train,
                         pipelined=pipelined, trajectory=trajectory).seconds


# --- the scaling table, for any block ------------------------------------------------------

def model_block(
    block: PararealODEBlock,
    x0: torch.Tensor,
    comm: CommCosts,
    *,
    ranks: list[int] | None = None,
    number: int = 3,
    measured: dict[str, float] | None = None,
    overhead: dict[str, float] | None = None,
    serial: dict[str, float] | None = None,
) -> list[dict]:
    """Modelled forward and training-step speedups of ``block`` at ``x0`` on P ranks.

    The block's fine solve is kept and cut into N = max(P, N_block) slices (a per-slice field
    or a trajectory output fixes N, and P then stops at N); K at each N is measured by running
    the block on this process with its tolerance, with the output's relative error against
    the serial fine solve (K = N). Per-slice costs are measured once (1 thread) and rescaled
    with the fine steps per slice.

    Args:
        block: a parareal block (its options: methods, steps, tol, max_iters, recompute).
        x0: the block's input for one batch.
        comm: message costs (e.g. ``fit_hockney`` of a ping-pong on the target machine).
        ranks: P values (default: 1, 2, 4, ..., 1024, or the divisors of a fixed N).
        number: calls per timing of the per-slice costs.
        measured: per-slice costs already measured (``measure_slice``) instead.
        overhead: seconds per call outside the propagators, {"forward": .., "train": ..}.
        serial: serial seconds {"forward": .., "train": ..} instead of the fine solve's from
            the per-slice costs (e.g. a measured torchdiffeq baseline).
    """
    options, n0 = block.options, block.num_slices
    measured = measured or measure_slice(block, x0, number)
    overhead = overhead or {"forward": 0.0, "train": 0.0}
    total_steps = n0 * options.fine_steps
    fixed_n = isinstance(block.func, nn.ModuleList) or block.return_trajectory
    trajectory = block.return_trajectory or options.warm_start  # every boundary gathered
    serial = serial or {t: serial_seconds(measured, n0, t == "train") for t in ("forward", "train")}
    with torch.no_grad():
        reference = _resliced_block(block, n0, max_iters=n0, tol=0.0)(x0)
    if ranks is None:
        ranks = [d for d in range(1, n0 + 1) if n0 % d == 0] if fixed_n else RANKS
    rows = []
    for p in ranks:
        n = n0 if fixed_n or p <= n0 else p
        if n % p or total_steps % n:
            continue
        resliced = _resliced_block(block, n)
        with torch.no_grad():
            out = resliced(x0)
        k = resliced.stats.forward_iters
        error = ((out - reference).norm() / reference.norm()).item()
        factor = n0 / n
        row = {"P": p, "N": n, "K": k, "fine_steps_per_slice": total_steps // n,
               "relative_error": error}
        for kind in ("forward", "train"):
            train = kind == "train"
            costs = slice_costs(measured, train, options.recompute, overhead[kind])
            costs = costs.fine_scaled(factor)
            own = {"pipelined": options.pipelined, "trajectory": trajectory}
            free = modelled(costs, n, p, k, None, train, **own)
            today = modelled(costs, n, p, k, comm, train, **own)
            pipelined = modelled(costs, n, p, k, comm, train, pipelined=True,
                                 trajectory=trajectory)
            row[kind] = {
                "seconds_free": free, "seconds_comm": today, "seconds_comm_pipelined": pipelined,
                "speedup_free": serial[kind] / free, "speedup_comm": serial[kind] / today,
                "speedup_comm_pipelined": serial[kind] / pipelined,
            }
        rows.append(row)
    return rows


def _resliced_block(block: PararealODEBlock, num_slices: int, **options) -> PararealODEBlock:
    """The block's fine solve cut into ``num_slices`` slices (same field, same total steps)."""
    o = block.options
    steps = o.num_slices * o.fine_steps // num_slices
    new = dataclasses.replace(o, num_slices=num_slices, fine_steps=steps, warm_start=False,
                              **options)
    return PararealODEBlock(block.func, block.t0, block.t1, new,
                            return_trajectory=block.return_trajectory)


# --- the default run: the reference problem, measured at P = 1 and 2 -----------------------

#: the calibration's problem (``_mlp.Setup``): state 64, batch 32, t in [0, 4], graphs kept
REFERENCE = Setup(dim=64, batch=32, hidden=128, coarse_steps=1, t1=4.0)
CALIBRATION = [(2, 1), (4, 2)]  # (N, K) measured at P = 1 and P = 2


def calibration_world(rank: int, setups: list[dict], number: int, pairs: int) -> dict:
    """Rounds of: per-slice costs, the 1-process block and torchdiffeq on rank 0 alone, then
    per-slice costs and the 2-rank block on both ranks at once; plus ping-pong and
    collectives."""
    group = create_groups(2)[0]
    first = Setup(**setups[0])
    out = {"ping_pong": ping_pong(rank, SIZES, max(number, 5), pairs),
           "collectives": collectives(rank, first.batch * first.dim * 4, max(number, 5), pairs),
           "settings": []}
    for spec in setups:
        s = Setup(**spec)
        x, y = s.data()
        models = {name: s.model(kind) for name, kind in
                  (("p1", "parareal"), ("p2", "parareal"), ("odeint", "odeint"))}
        models["p2"][0].time_group = group
        steps = {(name, case): Step(model, case, x, y)
                 for name, model in models.items() for case in ("forward", "train")}
        rounds = []
        for i in range(pairs + 1):  # round 0 warms up
            dist.barrier()
            r = {}
            if rank == 0:
                r["alone"] = measure_slice(models["p1"][0], x, number)
                for (name, case), step in steps.items():
                    if name != "p2":
                        r[f"{name}_{case}"] = _common.timed(step, number)
            dist.barrier()
            r["shared"] = measure_slice(models["p2"][0], x, number)
            for case in ("forward", "train"):
                dist.barrier()
                r[f"p2_{case}"] = _common.timed(steps["p2", case], number)
            if i > 0:
                rounds.append(r)
        out["settings"].append({"N": s.slices, "K": s.iters, "rounds": rounds})
    return out


def calibrate(ranks_out: list[dict], ref: Setup) -> dict:
    """Overheads from P = 1, modelled over measured at P = 1 and P = 2, per round."""
    rank0, rank1 = ranks_out
    comm = fit_hockney([r["bytes"] for r in rank0["ping_pong"]],
                       [r["median"] for r in rank0["ping_pong"]])
    state_bytes = ref.batch * ref.dim * 4
    settings = []
    for setting, other in zip(rank0["settings"], rank1["settings"], strict=True):
        n, k = setting["N"], setting["K"]
        rows = {}
        for kind in ("forward", "train"):
            train = kind == "train"
            over, p1_ratio, p2_measured, p2_modelled = [], [], [], []
            for r, r1 in zip(setting["rounds"], other["rounds"], strict=True):
                alone = slice_costs(r["alone"], train, recompute=False)
                shared = slice_costs(r["shared"], train, recompute=False)
                p1_model = modelled(alone, n, 1, k, None, train)
                overhead = max(r[f"p1_{kind}"] - p1_model, 0.0)
                over.append(overhead)
                p1_ratio.append(p1_model / r[f"p1_{kind}"])
                measured = max(r[f"p2_{kind}"], r1[f"p2_{kind}"])
                model = modelled(dataclasses.replace(shared, overhead=overhead), n, 2, k, comm,
                                 train, pipelined=True)  # a fixed K with rk4: pipelined
                p2_measured.append(measured)
                p2_modelled.append(model)
            rows[kind] = {
                "overhead": _common.spread(over),
                "p1_measured": _common.spread([r[f"p1_{kind}"] for r in setting["rounds"]]),
                "p1_modelled_over_measured": _common.spread(p1_ratio),
                "p2_measured": _common.spread(p2_measured),
                "p2_modelled": _common.spread(p2_modelled),
                "p2_modelled_over_measured": _common.spread(
                    [a / b for a, b in zip(p2_modelled, p2_measured, strict=True)]),
                "odeint": _common.spread([r[f"odeint_{kind}"] for r in setting["rounds"]]),
            }
        settings.append({"N": n, "K": k, "state_bytes": state_bytes, **rows})
    measured_collectives = rank0["collectives"]
    return {
        "comm": {"latency": comm.latency, "bandwidth": comm.bandwidth},
        "collectives": {
            name: {"measured": measured_collectives[name], "modelled": value}
            for name, value in (("all_reduce_8B", comm.all_reduce(8, 2)),
                                ("broadcast_state", comm.broadcast(state_bytes, 2)))
        },
        "settings": settings,
    }


def default_run(args: argparse.Namespace) -> dict:
    ref = dataclasses.replace(REFERENCE, dim=args.dim, batch=args.batch)
    setups = [dataclasses.replace(ref, slices=n, fine_steps=args.steps // n, iters=k)
              for n, k in CALIBRATION]
    ranks_out = _common.run_ranks(calibration_world, ([dataclasses.asdict(s) for s in setups],
                                                      args.number, args.pairs))
    result = {"reference": {**dataclasses.asdict(ref), "steps": args.steps,
                            "scaling_steps": args.scaling_steps, "tol": args.tol},
              "ping_pong": ranks_out[0]["ping_pong"], **calibrate(ranks_out, ref)}
    comm = CommCosts(**result["comm"])
    # scaling: per-slice costs of the first setting (rank 0 alone), the fine ones scaled to
    # the longer solve; serial = the measured torchdiffeq call, scaled alike
    first, rounds = setups[0], ranks_out[0]["settings"][0]["rounds"]
    ratio = args.scaling_steps / args.steps
    measured = {key: statistics.median(r["alone"][key] for r in rounds) * (
        ratio if key in ("fine", "fine_graph", "fine_pull") else 1) for key in rounds[0]["alone"]}
    calibrated = result["settings"][0]
    serial = {kind: calibrated[kind]["odeint"]["median"] * ratio for kind in ("forward", "train")}
    overhead = {kind: calibrated[kind]["overhead"]["median"] for kind in ("forward", "train")}
    long = dataclasses.replace(first, fine_steps=args.scaling_steps // first.slices,
                               tol=args.tol, iters=None)
    x, _ = long.data()
    torch.set_num_threads(1)
    result["scaling"] = model_block(long.model("parareal")[0], x, comm,
                                    ranks=[p for p in RANKS if p <= args.max_ranks],
                                    measured=measured, overhead=overhead, serial=serial)
    result["scaling_note"] = (
        f"per-slice costs of the N = {first.slices} calibration (F scaled x{ratio:g} to "
        f"{args.scaling_steps} steps in all); serial = torchdiffeq rk4 (1 thread), scaled alike; "
        "overhead per call from the P = 1 calibration")
    return result


# --- a zoo config --------------------------------------------------------------------------

def load_config_block(
    path: Path, checkpoint: Path | None = None
) -> tuple[PararealODEBlock, torch.Tensor]:
    """The parareal block of a zoo config's model and its input for one training batch.

    Args:
        path: the config (YAML with ``model`` and ``data`` sections).
        checkpoint: a Lightning checkpoint of that model to load first: K depends on the
            trained field (an untrained one is nearly linear and converges at once).
    """
    import yaml

    import pnode_zoo.data as data_modules
    import pnode_zoo.tasks as tasks
    from pnode_zoo.cli.inputs import LINKED

    config = yaml.safe_load(path.read_text())
    if "seed_everything" in config:
        torch.manual_seed(int(config["seed_everything"]))
    data_spec, model_spec = config.get("data", {}), config.get("model", {})
    data_cls = getattr(data_modules, str(data_spec.get("class_path", "")).split(".")[-1], None)
    task_cls = getattr(tasks, str(model_spec.get("class_path", "")).split(".")[-1], None)
    if data_cls is None or task_cls is None:
        raise SystemExit(f"error: {path} needs data and model class_path entries of pnode_zoo")
    datamodule = data_cls(**data_spec.get("init_args", {}))
    datamodule.prepare_data()
    datamodule.setup("fit")
    init = dict(model_spec.get("init_args", {}))
    accepted = set(__import__("inspect").signature(task_cls).parameters)
    for link in LINKED:  # what the CLI links from the data
        if link in accepted and hasattr(datamodule, link):
            init[link] = getattr(datamodule, link)
    task = task_cls(**init)
    if checkpoint is not None:
        try:
            state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
        except (OSError, KeyError, RuntimeError, pickle.UnpicklingError) as err:
            raise SystemExit(f"error: cannot read weights from {checkpoint}: {err}") from err
        task.load_state_dict(state)
    blocks = [m for m in task.modules() if isinstance(m, PararealODEBlock)]
    if not blocks:
        raise SystemExit(f"error: the model of {path} has no parareal block")
    captured = {}
    hook = blocks[0].register_forward_pre_hook(lambda m, a: captured.setdefault("x0", a[0]))
    batch = next(iter(datamodule.train_dataloader()))
    with torch.no_grad():
        task(*batch[:-1])
    hook.remove()
    return blocks[0], captured["x0"].detach()


def config_run(args: argparse.Namespace) -> tuple[str, dict]:
    torch.set_num_threads(1)
    path = Path(args.config)
    if args.comm:
        ranks_out = _common.run_ranks(_comm_world, (args.number, args.pairs))
        rows = ranks_out[0]
        comm = fit_hockney([r["bytes"] for r in rows], [r["median"] for r in rows])
    else:
        saved = _common.OUT_DIR / f"{NAME}.json"
        if not saved.exists():
            raise SystemExit(f"error: no {saved}: run the default benchmark first or add --comm")
        comm = CommCosts(**json.loads(saved.read_text())["comm"])
    block, x0 = load_config_block(path, Path(args.ckpt) if args.ckpt else None)
    measured = measure_slice(block, x0, args.number)
    rows = model_block(block, x0, comm, measured=measured)
    name = path.stem if path.parent.name == "configs" else f"{path.parent.name}_{path.stem}"
    return name, {
        "config": str(path), "checkpoint": args.ckpt, "block": repr(block),
        "input_shape": list(x0.shape), "comm": dataclasses.asdict(comm), "measured": measured,
        "scaling": rows}


def _comm_world(rank: int, number: int, pairs: int) -> list[dict]:
    return ping_pong(rank, SIZES, max(number, 5), pairs)


# --- output --------------------------------------------------------------------------------

def scaling_table(rows: list[dict]) -> list[str]:
    lines = [
        "| P | N | K | rel. error | forward: free | with messages, as configured | fixed K, "
        "pipelined | training step: free | with messages, as configured | fixed K, pipelined |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, t = r["forward"], r["train"]
        lines.append(
            f"| {r['P']} | {r['N']} | {r['K']} | {r['relative_error']:.1e} | "
            f"{f['speedup_free']:.2f} | {f['speedup_comm']:.2f} | "
            f"{f['speedup_comm_pipelined']:.2f} | {t['speedup_free']:.2f} | "
            f"{t['speedup_comm']:.2f} | {t['speedup_comm_pipelined']:.2f} |")
    return lines


SCALING_TEXT = (
    "Speedups are **modelled** (`benchmarks/_schedule.py`), over the serial fine solve on one "
    "core: *free* leaves messages out; *as configured* runs the block's own schedule with the "
    "measured message costs (with a tolerance the residual is all-reduced after the sweep and "
    "after every iteration, so every iteration waits for the whole chain of coarse "
    "corrections); *fixed K* is the same K run without a tolerance (`tol: 0`, explicit "
    "fixed-step propagators: `PararealOptions.pipelined`), whose residuals are reduced once at "
    "the end, so ranks run ahead. K and the relative error of the output against the serial "
    "fine solve are measured by running the block at that N on one process."
)


def markdown(env: dict, result: dict) -> str:
    ref, comm = result["reference"], result["comm"]
    lines = [
        "# Parareal schedule with measured communication (modelled for P = 1..1024)", "",
        _common.header(env), "",
        "## Messages (measured)", "",
        "gloo, 2 ranks on this machine, one-way seconds (half a ping-pong round trip), median "
        "(min–max) of the pairs. Fit t(n) = latency + n / bandwidth (relative least squares): "
        f"**latency {comm['latency'] * 1e6:.1f} µs, bandwidth {comm['bandwidth'] / 1e9:.2f} "
        "GB/s**.", "",
        "| bytes | one-way µs | fit µs |", "|---|---|---|",
    ]
    fitted = CommCosts(**comm)
    for r in result["ping_pong"]:
        lines.append(f"| {r['bytes']} | {r['median'] * 1e6:.1f} ({r['min'] * 1e6:.1f}–"
                     f"{r['max'] * 1e6:.1f}) | {fitted.message(r['bytes']) * 1e6:.1f} |")
    lines += ["", "| collective (2 ranks) | measured µs | modelled µs |", "|---|---|---|"]
    for name, c in result["collectives"].items():
        m = c["measured"]
        lines.append(f"| {name} | {m['median'] * 1e6:.1f} ({m['min'] * 1e6:.1f}–"
                     f"{m['max'] * 1e6:.1f}) | {c['modelled'] * 1e6:.1f} |")
    lines += [
        "", "## Calibration: modelled against measured at P = 1 and P = 2", "",
        f"Reference model: MLP field (state {ref['dim']}, hidden {ref['hidden']}, tanh) + linear "
        f"head, batch {ref['batch']}, t in [0, {ref['t1']:g}], {ref['steps']} rk4 steps in all "
        "(F), one rk4 step per slice (G), fixed K (tol 0: pipelined), `unrolled` gradient with "
        "the forward's graphs kept (`recompute: false`); training step = forward, mean-squared "
        "loss, backward, SGD step. Per "
        "round: per-slice costs and the 1-process block on rank 0 alone, then per-slice costs "
        "and the 2-rank block on both ranks at once (2 ranks x 1 thread). *Overhead* = measured "
        "minus modelled at P = 1 (bookkeeping outside F and G), added to the P = 2 model. "
        "Seconds are medians (min–max) of the rounds; ratios per round.", "",
        "| N | K | call | P = 1 measured s | modelled/measured, P = 1 (no overhead) | overhead "
        "s | P = 2 measured s | P = 2 modelled s | modelled/measured, P = 2 | torchdiffeq "
        "1 thread s |", "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in result["settings"]:
        for kind in ("forward", "train"):
            r = s[kind]
            lines.append(
                f"| {s['N']} | {s['K']} | {kind} | {_common.fmt_spread(r['p1_measured'], 4)} | "
                f"{_common.fmt_spread(r['p1_modelled_over_measured'])} | "
                f"{r['overhead']['median']:.4f} | {_common.fmt_spread(r['p2_measured'], 4)} | "
                f"{r['p2_modelled']['median']:.4f} | "
                f"{_common.fmt_spread(r['p2_modelled_over_measured'])} | "
                f"{r['odeint']['median']:.4f} |")
    lines += [
        "", "## Scaling (modelled)", "",
        f"The reference model's fine solve lengthened to {ref['scaling_steps']} rk4 steps and "
        f"cut into N slices; tolerance {ref['tol']:g}; {result['scaling_note']}. "
        + SCALING_TEXT, "", *scaling_table(result["scaling"]), "",
        f"![modelled speedup against ranks]({NAME}.png)", "",
    ]
    return "\n".join(lines)


def config_markdown(env: dict, result: dict) -> str:
    comm = result["comm"]
    return "\n".join([
        f"# Modelled parareal scaling of `{result['config']}`", "", _common.header(env), "",
        f"Block: `{result['block']}`, input {result['input_shape']}. Messages: latency "
        f"{comm['latency'] * 1e6:.1f} µs, bandwidth {comm['bandwidth'] / 1e9:.2f} GB/s. "
        "Per-slice seconds (1 thread): "
        + ", ".join(f"{k} {v:.2e}" for k, v in result["measured"].items() if "bytes" not in k)
        + ". Serial = N x (F) for the forward, N x (F with graph + pull-back) for training. "
        + SCALING_TEXT, "", *scaling_table(result["scaling"]), ""])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["scaling"]
    ps = [r["P"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for ax, kind in zip(axes, ("forward", "train"), strict=True):
        for key, style, label in (("speedup_free", "o-", "communication-free"),
                                  ("speedup_comm", "s--", "with messages, as configured"),
                                  ("speedup_comm_pipelined", "^:", "fixed K, pipelined")):
            ax.loglog(ps, [r[kind][key] for r in rows], style, ms=4, label=label, base=2)
        ax.set(xlabel="ranks P", ylabel="speedup over serial fine (modelled)",
               title=f"{'Forward' if kind == 'forward' else 'Training step'} (modelled)")
    _common.save_figure(fig, axes, path)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--pairs", type=int, default=5, help="measured rounds after a warm-up")
    parser.add_argument("--number", type=int, default=2, help="calls per timing")
    parser.add_argument("--dim", type=int, default=REFERENCE.dim, help="state size")
    parser.add_argument("--batch", type=int, default=REFERENCE.batch)
    parser.add_argument("--steps", type=int, default=256,
                        help="fine rk4 steps in all, for the measured runs (divisible by 4)")
    parser.add_argument("--scaling-steps", type=int, default=4096,
                        help="fine rk4 steps in all, for the modelled scaling")
    parser.add_argument("--tol", type=float, default=1e-5,
                        help="parareal's tolerance in the modelled scaling")
    parser.add_argument("--max-ranks", type=int, default=RANKS[-1], help="largest modelled P")
    parser.add_argument("--config", help="model a zoo config's parareal block instead")
    parser.add_argument("--ckpt", help="with --config: a trained checkpoint of that model")
    parser.add_argument("--comm", action="store_true",
                        help="with --config: measure the messages again (else the saved fit)")
    args = parser.parse_args()
    tic = time.perf_counter()
    env = _common.environment("1 thread per rank; ranks of 2-rank runs share the machine",
                              args.allow_dirty)
    if args.config:
        name, result = config_run(args)
        result["seconds"] = time.perf_counter() - tic
        text = config_markdown(env, result)
        _common.write_results(f"{NAME}_{name}", {"environment": env, **result}, text)
    else:
        result = default_run(args)
        result["seconds"] = time.perf_counter() - tic
        text = markdown(env, result)
        _common.write_results(NAME, {"environment": env, **result}, text)
        plot(result, _common.OUT_DIR / f"{NAME}.png")
    print(text)


if __name__ == "__main__":
    main()
