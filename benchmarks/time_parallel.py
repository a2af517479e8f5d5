"""Parareal on 2 ranks x 1 thread against the solvers users have: torchdiffeq's odeint
(backprop) and odeint_adjoint, best of 1 and 2 threads, across state sizes.

Run from the repository root:

    python benchmarks/time_parallel.py [--dims 16 64 256] [--fine-steps 16 32 64] [--batch 64]
        [--pairs 7] [--number 2]

Model: an MLP vector field (state D, 2 hidden layers, tanh) then a linear head; t in [0, 1]; the
fine solve is N x fine-steps RK4 steps (by default 2 x 16, 2 x 32 and 2 x 64: how long a solve
must be before 2 ranks pay), the coarse one coarse-steps RK4 steps per slice, K = --iters
parareal iterations (tol 0: a fixed K, its error against the serial fine solve reported). Cases:
the forward pass (no graph) and a training step (forward, mean-squared loss, backward, SGD step
of block and head; learning rate 0, so every round sees the same weights). Candidates, timed
with ``torch.utils.benchmark`` in alternating rounds (one warm-up round, then --pairs rounds:
every candidate once per round, the 2-rank run on both ranks with the same number of calls):

- parareal, 2 ranks x 1 thread (gloo): the `unrolled` gradient with the forward's graphs kept
  (`recompute: false`) and with re-runs (`recompute: true`, memory flat in the steps);
- parareal on 1 process, 1 and 2 threads (graphs kept);
- torchdiffeq `odeint` (the zoo's `ODEBlock`, what `odenet` runs), same rk4 grid, 1 and 2 threads;
- torchdiffeq `odeint_adjoint`, same grid, 1 and 2 threads (training only: without a graph it is
  `odeint`).

Reported per state size and fine steps: seconds per call, the speedup of each 2-rank variant
over every baseline per round (median, min–max) and over the best of 1 and 2 threads (also in
one summary table), peak RSS of one call in a fresh process per candidate (at the largest fine-
steps value), the relative error of output and gradient against the serial fine solve (odeint),
K, per-rank fine / coarse / communication / wait seconds of one call from a torch.profiler trace
beside the block's own timers (and which collective the communication time went to), and the
speedup the schedule model predicts at P = 2 from per-slice costs and a ping-pong measured in
the same run.

Writes docs/benchmarks/time_parallel.{json,md}.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import _common
import comm_model
import torch
import torch.distributed as dist
from _mlp import Setup, Step
from torch import nn
from torch.profiler import ProfilerActivity, profile

from pnode_zoo.distributed import create_groups

NAME = "time_parallel"
SCRIPT = Path(__file__).resolve()
PARALLEL = {"forward": ["parareal_kept"], "train": ["parareal_kept", "parareal_recompute"]}
SERIAL = {"forward": ["parareal", "odeint"], "train": ["parareal", "odeint", "odeint_adjoint"]}
LABELS = {
    "parareal_kept": "parareal, 2 ranks x 1 thread (graphs kept)",
    "parareal_recompute": "parareal, 2 ranks x 1 thread (recompute)",
    "parareal": "parareal, 1 process (graphs kept)",
    "odeint": "torchdiffeq odeint",
    "odeint_adjoint": "torchdiffeq odeint_adjoint",
}
#: torch.profiler ranges of the block (problem.py) and of the time group (communicator.py)
RANGES = ("parareal/fine", "parareal/coarse", "time_parallel/comm", "time_parallel/wait")


def candidates(case: str) -> list[tuple[str, int]]:
    """(kind, threads) in the order of a round; threads 0 marks a 2-rank run."""
    return [(kind, 0) for kind in PARALLEL[case]] + [
        (kind, threads) for kind in SERIAL[case] for threads in (1, 2)]


def key(kind: str, threads: int) -> str:
    return kind if threads == 0 else f"{kind}@{threads}"


# --- one state size, on 2 ranks ------------------------------------------------------------

def world(rank: int, setup: dict, cases: list[str], number: int, pairs: int) -> dict:
    """Alternating rounds of every candidate; then accuracy, one profiled call per 2-rank
    variant, per-slice costs and a ping-pong for the model. Rank 1 joins the 2-rank runs and
    otherwise waits at a barrier."""
    s = Setup(**setup)
    group = create_groups(2)[0]
    x, y = s.data()
    out: dict = {}
    for case in cases:
        models, fns = {}, {}
        for kind, threads in candidates(case):
            if threads == 0 or rank == 0:
                models[kind] = models.get(kind) or s.model(kind)
                if threads == 0:
                    models[kind][0].time_group = group
                fns[key(kind, threads)] = Step(models[kind], case, x, y)
        times: dict[str, list[float]] = {name: [] for name in fns}
        for i in range(pairs + 1):  # round 0 warms up
            for kind, threads in candidates(case):
                dist.barrier()
                if key(kind, threads) in fns:
                    seconds = _common.timed(fns[key(kind, threads)], number, max(threads, 1))
                    if i > 0:
                        times[key(kind, threads)].append(seconds)
        dist.barrier()
        out[case] = {
            "times": times,
            "per_rank": {kind: one_profiled_call(models[kind], fns[kind])
                         for kind in PARALLEL[case]},
            "accuracy": accuracy(fns, case) if rank == 0 else {},
        }
        if rank == 0:  # inputs of the model: per-slice costs with the machine to itself
            out[case]["slice_costs"] = comm_model.measure_slice(
                models["parareal"][0], x, number)
        dist.barrier()
    out["ping_pong"] = comm_model.ping_pong(rank, [8, s.batch * s.dim * 4], 10, 3)
    return out


def one_profiled_call(model: nn.Module, fn: Step) -> dict:
    """Where one call's time goes on this rank: torch.profiler ranges, the communication by
    collective, and the block's own timers of the same call."""
    dist.barrier()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    stats = model[0].stats
    return {
        "profiler": profile_ranges(prof.key_averages()),
        "comm_by_op": comm_by_op(prof.events()),
        "stats": {k: stats.summary()[k] for k in
                  ("time_fine", "time_coarse", "time_comm", "time_wait", "forward_iters")},
    }


def profile_ranges(averages) -> dict[str, dict[str, float]]:
    """Seconds and calls of the block's ranges (``RANGES``) in a profiler's key averages."""
    found = {event.key: event for event in averages if event.key in RANGES}
    return {name: {"seconds": found[name].cpu_time_total / 1e6 if name in found else 0.0,
                   "calls": found[name].count if name in found else 0} for name in RANGES}


def comm_by_op(events) -> dict[str, float]:
    """Seconds of the ``time_parallel/comm`` ranges by the collective inside them (the c10d
    op; none: waiting for this rank's sends to complete)."""
    out: dict[str, float] = {}
    for event in events:
        if event.name != "time_parallel/comm":
            continue
        ops = [c.name for c in event.cpu_children if c.name.startswith("c10d::")]
        op = ops[0].removeprefix("c10d::").rstrip("_") if ops else "wait for sends"
        out[op] = out.get(op, 0.0) + event.cpu_time_total / 1e6
    return out


def accuracy(steps: dict[str, Step], case: str) -> dict:
    """Relative errors of each candidate's last call against the serial fine solve (odeint at
    1 thread): the output, and in a training step the gradient of all parameters (block and
    head). Rank 0, after the 2-rank variants' profiled call (a call of both ranks)."""
    reference = steps["odeint@1"]
    out = {}
    for name, step in steps.items():
        kind = name.partition("@")[0]
        if kind == "odeint" or kind in out:
            continue
        grad = step.gradient()
        out[kind] = {"output": _rel(step.output, reference.output),
                     "gradient": None if grad is None else _rel(grad, reference.gradient())}
    return out


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


# --- peak memory, one fresh process per candidate ------------------------------------------

def rss_child(payload: dict) -> dict:
    """Peak RSS over two calls in this fresh process, or on each of 2 spawned ranks (fresh
    interpreters too), and the RSS before the first call (model and data built).

    Args:
        payload: ``setup`` (a ``Setup`` as a dict), ``case``, ``kind`` (of ``Setup.model``)
            and optionally ``ranks`` (default: 2 for the 2-rank kinds of the case, else 1).
    """
    s, case, kind = Setup(**payload["setup"]), payload["case"], payload["kind"]
    torch.set_num_threads(1)
    if payload.get("ranks", 2 if kind in PARALLEL[case] else 1) == 2:
        per_rank = _common.run_ranks(_rss_rank, (payload,), start_method="spawn")
        return max(per_rank, key=lambda r: r["peak"] - r["before"])  # the hungrier rank
    return _rss_measure(s, case, kind)


def _rss_rank(rank: int, payload: dict) -> dict:
    s = Setup(**payload["setup"])
    return _rss_measure(s, payload["case"], payload["kind"], create_groups(2)[0])


def _rss_measure(s: Setup, case: str, kind: str, group=None) -> dict:
    model = s.model(kind)
    model[0].time_group = group
    x, y = s.data()
    fn = Step(model, case, x, y)
    before = _common.current_rss_bytes()
    fn()
    fn()
    return {"peak": _common.peak_rss_bytes(), "before": before}


# --- results -------------------------------------------------------------------------------

def summarise(ranks_out: list[dict], setup: Setup, cases: list[str], memory: dict) -> dict:
    """Ratios per round, the best-of-threads baselines, where the time goes, the model."""
    rank0, rank1 = ranks_out
    comm = comm_model.fit_hockney([r["bytes"] for r in rank0["ping_pong"]],
                                  [r["median"] for r in rank0["ping_pong"]])
    result = {"comm": dataclasses.asdict(comm)}
    for case in cases:
        times = dict(rank0[case]["times"])
        for kind in PARALLEL[case]:  # a 2-rank call lasts until its slower rank is done
            times[kind] = [max(a, b) for a, b in
                           zip(times[kind], rank1[case]["times"][kind], strict=True)]
        for kind in SERIAL[case]:
            times[f"{kind}@best"] = [min(a, b) for a, b in
                                     zip(times[f"{kind}@1"], times[f"{kind}@2"], strict=True)]
        speedups = {
            parallel: {base: _common.spread([b / a for a, b in
                                             zip(times[parallel], times[base], strict=True)])
                       for base in times if base not in PARALLEL[case]}
            for parallel in PARALLEL[case]
        }
        measured, train = rank0[case]["slice_costs"], case == "train"
        # the per-call overhead: the 1-process block (graphs kept) measured minus modelled
        kept = comm_model.slice_costs(measured, train, recompute=False)
        overhead = max(statistics.median(times["parareal@1"]) - comm_model.modelled(
            kept, setup.slices, 1, setup.iters, None, train), 0.0)
        modelled = {}
        for kind in PARALLEL[case]:
            costs = comm_model.slice_costs(measured, train, kind == "parareal_recompute",
                                           overhead)
            seconds = comm_model.modelled(costs, setup.slices, 2, setup.iters, comm, train,
                                          pipelined=True)  # a fixed K with rk4
            best = statistics.median(times["odeint@best"])
            modelled[kind] = {"seconds": seconds, "speedup_over_odeint_best": best / seconds,
                              "overhead": overhead}
        result[case] = {
            "seconds": {name: _common.spread(t) for name, t in times.items()},
            "speedup": speedups,
            "accuracy": rank0[case]["accuracy"],
            "per_rank": {kind: [rank0[case]["per_rank"][kind], rank1[case]["per_rank"][kind]]
                         for kind in PARALLEL[case]},
            "slice_costs": measured,
            "modelled": modelled,
            "memory": memory.get(case, {}),
        }
    return result


def markdown(env: dict, setup: Setup, cases: list[str], results: dict[str, dict]) -> str:
    s = setup
    lines = [
        "# Parareal on 2 ranks against torchdiffeq (odeint, odeint_adjoint)", "",
        _common.header(env), "",
        f"Model: MLP field (state D, hidden {s.hidden}, 2 tanh layers) + linear head, float32, "
        f"batch {s.batch}, t in [0, 1]; fine solve {s.slices} x S rk4 steps (S per slice; "
        "torchdiffeq: the same grid), coarse "
        f"{s.coarse_steps} rk4 steps per slice, K = {s.iters} (fixed). Training step = forward, "
        "mean-squared loss, backward, SGD step (lr 0). Speedup = baseline seconds / 2-rank "
        "seconds in the same round (a 2-rank call lasts until its slower rank is done); median "
        "(min–max) over the rounds; *best* = the faster of 1 and 2 threads in each round. Peak "
        "RSS: `getrusage` max RSS of a fresh process over two calls, one thread (2 ranks: the "
        "rank whose calls add more); *call* = peak minus the RSS before the first call (model "
        "and data built): the calls' own memory, comparable across candidates.", "",
        *summary_table(cases, results), "",
    ]
    for dim, by_steps in results.items():
        for steps, r in by_steps.items():
            lines += [f"## State {dim}, {steps} fine steps per slice", ""]
            for case in cases:
                lines += _case_tables(case, r, s)
    lines += [
        "Per-rank seconds of one call: profiler = torch.profiler ranges (`parareal/fine`, "
        "`parareal/coarse`: the propagators' solves, `time_parallel/comm`: sends and "
        "collectives, `time_parallel/wait`: blocked receives); stats = the block's own timers "
        "(both count the VJPs as the propagator's time). *Modelled* "
        "= `benchmarks/_schedule.py` at P = 2 from per-slice costs measured on rank 0 alone, "
        "messages from a ping-pong in the same run, and the P = 1 overhead (measured minus "
        "modelled at 1 thread).", ""]
    return "\n".join(lines)


def summary_table(cases: list[str], results: dict[str, dict]) -> list[str]:
    """Every 2-rank variant's speed-up over the best single-process baseline (odeint), by
    state size and fine steps per slice."""
    columns = [(case, kind) for case in cases for kind in PARALLEL[case]]
    names = {("forward", "parareal_kept"): "forward",
             ("train", "parareal_kept"): "training step, graphs kept",
             ("train", "parareal_recompute"): "training step, recompute"}
    lines = ["Speed-up of 2 ranks x 1 thread over torchdiffeq `odeint` (best of 1 and 2 "
             "threads), median (min–max) over the rounds, and the largest relative error "
             "(output or gradient) against the serial fine solve:", "",
             "| state | fine steps per slice | " + " | ".join(names[c] for c in columns)
             + " | rel. error |", "|---|---|" + "---|" * len(columns) + "---|"]
    for dim, by_steps in results.items():
        for steps, r in by_steps.items():
            errors = [v for case in cases for acc in r[case]["accuracy"].values()
                      for v in acc.values() if v is not None]
            lines.append(f"| {dim} | {steps} | " + " | ".join(
                _common.fmt_spread(r[case]["speedup"][kind]["odeint@best"]).replace(" ", "× ", 1)
                for case, kind in columns) + f" | {max(errors, default=0.0):.1e} |")
    return lines


def _case_tables(case: str, r: dict, s: Setup) -> list[str]:
    c = r[case]
    parallel = PARALLEL[case]
    title = "Forward pass" if case == "forward" else "Training step"
    lines = [f"### {title}", "",
             "| candidate | threads | seconds | " + " | ".join(
                 f"speedup of {LABELS[p].split(', ', 1)[1]}" for p in parallel)
             + " | peak RSS MiB | call MiB | rel. error output | rel. error gradient |",
             "|---|---|---|" + "---|" * len(parallel) + "---|---|---|---|"]
    for name, sec in c["seconds"].items():
        kind, _, threads = name.partition("@")
        speed = [("–" if name in parallel else _common.fmt_spread(c["speedup"][p][name]))
                 for p in parallel]
        lines.append(_row(kind, threads, sec, speed, c["memory"].get(kind, {}),
                          c["accuracy"].get(kind, {})))
    lines += ["", "| 2-rank variant | rank | K | fine s (profiler / stats) | coarse s | comm s | "
              "wait s | comm by collective (profiler) |", "|---|---|---|---|---|---|---|---|"]
    for kind in parallel:
        for rank, pr in enumerate(c["per_rank"][kind]):
            prof, st = pr["profiler"], pr["stats"]
            ops = ", ".join(f"{op} {sec * 1e3:.1f} ms" for op, sec in pr["comm_by_op"].items())
            lines.append(
                f"| {LABELS[kind].split(', ', 1)[1]} | {rank} | {st['forward_iters']} | "
                f"{prof['parareal/fine']['seconds']:.4f} / {st['time_fine']:.4f} | "
                f"{prof['parareal/coarse']['seconds']:.4f} / {st['time_coarse']:.4f} | "
                f"{prof['time_parallel/comm']['seconds']:.4f} / {st['time_comm']:.4f} | "
                f"{prof['time_parallel/wait']['seconds']:.4f} / {st['time_wait']:.4f} | "
                f"{ops or '–'} |")
    lines += ["", "| 2-rank variant | speedup over odeint (best), measured | modelled (P = 2, "
              "with messages) | modelled s | overhead s (P = 1) |", "|---|---|---|---|---|"]
    for kind in parallel:
        m = c["modelled"][kind]
        lines.append(f"| {LABELS[kind].split(', ', 1)[1]} | "
                     f"{_common.fmt_spread(c['speedup'][kind]['odeint@best'])} | "
                     f"{m['speedup_over_odeint_best']:.2f} | {m['seconds']:.4f} | "
                     f"{m['overhead']:.4f} |")
    return [*lines, ""]


def _row(kind: str, threads: str, sec: dict, speed: list[str], mem: dict, acc: dict) -> str:
    memory = (f"{_common.mib(mem['peak'])} | {_common.mib(mem['peak'] - mem['before'])}"
              if mem else "– | –")
    output = f"{acc['output']:.1e}" if acc else "–"
    gradient = f"{acc['gradient']:.1e}" if acc.get("gradient") is not None else "–"
    return (f"| {LABELS[kind]} | {threads or '2 x 1'} | {_common.fmt_spread(sec, 4)} | "
            + " | ".join(speed) + f" | {memory} | {output} | {gradient} |")


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--dims", type=int, nargs="+", default=[16, 64, 256], help="state sizes")
    parser.add_argument("--batch", type=int, default=Setup.batch)
    parser.add_argument("--hidden", type=int, default=Setup.hidden)
    parser.add_argument("--slices", type=int, default=Setup.slices, help="N (even: 2 ranks)")
    parser.add_argument("--fine-steps", type=int, nargs="+", default=[16, 32, 64],
                        help="per slice, one run each")
    parser.add_argument("--coarse-steps", type=int, default=Setup.coarse_steps, help="per slice")
    parser.add_argument("--iters", type=int, default=Setup.iters, help="K (fixed)")
    parser.add_argument("--cases", nargs="+", default=["forward", "train"],
                        choices=["forward", "train"])
    parser.add_argument("--pairs", type=int, default=7, help="measured rounds after a warm-up")
    parser.add_argument("--number", type=int, default=2, help="calls per timing")
    args = _common.parse_or_run_child(parser, rss_child)
    if args is None:
        return
    env = _common.environment("candidates: 2 ranks x 1 thread, or 1 process x 1 and x 2 "
                              "threads (the other rank idle at a barrier)", args.allow_dirty)
    tic = time.perf_counter()
    results = {}
    for dim in args.dims:
        results[str(dim)] = {}
        for steps in args.fine_steps:
            setup = Setup(dim=dim, batch=args.batch, hidden=args.hidden, slices=args.slices,
                          fine_steps=steps, coarse_steps=args.coarse_steps, iters=args.iters)
            ranks_out = _common.run_ranks(world, (dataclasses.asdict(setup), args.cases,
                                                  args.number, args.pairs))
            # memory once per state, at the longest solve (memory.py covers the steps)
            memory = {} if args.no_memory or steps != max(args.fine_steps) else {
                case: {kind: _common.run_fresh(SCRIPT, {"setup": dataclasses.asdict(setup),
                                                        "case": case, "kind": kind})
                       for kind in PARALLEL[case] + SERIAL[case]}
                for case in args.cases}
            results[str(dim)][str(steps)] = summarise(ranks_out, setup, args.cases, memory)
    base = Setup(batch=args.batch, hidden=args.hidden, slices=args.slices,
                 coarse_steps=args.coarse_steps, iters=args.iters)
    text = markdown(env, base, args.cases, results)
    _common.write_results(NAME, {"environment": env,
                                 "setup": {**dataclasses.asdict(base),
                                           "fine_steps": args.fine_steps},
                                 "seconds": time.perf_counter() - tic, "results": results}, text)
    print(text)


if __name__ == "__main__":
    main()
