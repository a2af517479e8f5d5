"""The fine adjoint's chain pipelined over parts of the batch (``backward_micro_batches``).

Run from the repository root:

    python benchmarks/adjoint_micro_batches.py [--parts 1 2 4 8] [--pairs 5]

``backward="fine_adjoint"`` is a sequential chain of fine VJPs: on 2 ranks the first waits for
the second's whole chain. Cut into M parts of the batch, rank 0 works on part m while rank 1
works on part m + 1, at best 2M/(M + 1) times faster for the backward's chain, if a part costs
1/M of the batch. Model: ``time_parallel.py``'s (MLP field, linear head; N = 2 slices of RK4
steps, one RK4 coarse step per slice, K = 1) at two sizes; training steps of the block on
2 ranks x 1 thread for every M, against torchdiffeq ``odeint`` backprop on the same grid at 1
and 2 threads (the better is the baseline), in alternating rounds timed with
``torch.utils.benchmark``; medians (min-max) over the rounds, and each M's gradient against
M = 1's. Writes docs/benchmarks/adjoint_micro_batches.{json,md}.
"""

from __future__ import annotations

import dataclasses

import _common
import torch
import torch.distributed as dist
from _mlp import Setup, Step

from pnode_zoo.distributed import create_groups

NAME = "adjoint_micro_batches"
#: a small state, where per-operation overheads dominate, and a large one
SIZES = (Setup(dim=64, batch=64, hidden=128, fine_steps=32),
         Setup(dim=256, batch=256, hidden=512, fine_steps=16))


def world(rank: int, setups: list[dict], parts: list[int], pairs: int, number: int) -> list:
    """Every size: alternating rounds of the block at every M (both ranks) and of odeint at 1
    and 2 threads (rank 0; rank 1 waits at the barrier); seconds per training step."""
    group = create_groups(2)[0]
    out = []
    for spec in setups:
        base = Setup(**spec)
        x, y = base.data()
        steps = {}
        for m in parts:
            model = dataclasses.replace(base, micro_batches=m).model("parareal_fine_adjoint")
            model[0].time_group = group
            steps[f"M={m}"] = (Step(model, "train", x, y), 1)
        if rank == 0:
            for threads in (1, 2):
                steps[f"odeint@{threads}"] = (Step(base.model("odeint"), "train", x, y), threads)
        times: dict[str, list[float]] = {name: [] for name in steps}
        candidates = [*(f"M={m}" for m in parts), "odeint@1", "odeint@2"]
        for i in range(pairs + 1):  # round 0 warms up
            for name in candidates:
                dist.barrier()
                if name in steps:
                    seconds = _common.timed(steps[name][0], number, steps[name][1])
                    if i > 0:
                        times[name].append(seconds)
        reference = steps[f"M={parts[0]}"][0].gradient()
        errors = {name: float((step.gradient() - reference).norm() / reference.norm())
                  for name, (step, _) in steps.items() if name.startswith("M=")}
        out.append({"times": times, "gradient_error": errors})
    return out


def summarise(setup: Setup, measured: dict, parts: list[int]) -> dict:
    """Seconds and speed-ups (against the better odeint, and against M = the first) per M."""
    times = measured["times"]
    baseline = min(("odeint@1", "odeint@2"), key=lambda k: _common.spread(times[k])["median"])
    rows = []
    for m in parts:
        own = times[f"M={m}"]
        rows.append({
            "parts": m,
            "seconds": _common.spread(own),
            "speedup_vs_odeint": _common.spread(
                [b / t for b, t in zip(times[baseline], own, strict=True)]),
            "speedup_vs_one_part": _common.spread(
                [b / t for b, t in zip(times[f"M={parts[0]}"], own, strict=True)]),
            "gradient_error": measured["gradient_error"][f"M={m}"],
        })
    return {"setup": dataclasses.asdict(setup), "baseline": baseline,
            "baseline_seconds": _common.spread(times[baseline]), "rows": rows}


def markdown(env: dict, sizes: list[dict]) -> str:
    lines = [
        "# The fine adjoint's chain pipelined over parts of the batch", "",
        _common.header(env), "",
        "Training steps of a parareal block with `backward=\"fine_adjoint\"` on 2 ranks x 1 "
        "thread, its batch cut into M parts (`backward_micro_batches`), against torchdiffeq "
        "`odeint` backprop on the same RK4 grid (the better of 1 and 2 threads). MLP field + "
        "linear head, N = 2 slices, one RK4 coarse step per slice, K = 1. Medians (min-max) "
        "over alternating rounds; gradient error: relative to M = 1's.", "",
    ]
    for size in sizes:
        s = size["setup"]
        lines += [
            f"## State {s['dim']}, batch {s['batch']}, hidden {s['hidden']}, "
            f"{s['fine_steps']} fine steps per slice", "",
            f"Baseline {size['baseline']}: {size['baseline_seconds']['median'] * 1e3:.1f} ms.",
            "",
            "| M | ms per step | against odeint | against M = 1 | gradient error |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['parts']} | {r['seconds']['median'] * 1e3:.1f} | "
            f"{_common.fmt_spread(r['speedup_vs_odeint'])}x | "
            f"{_common.fmt_spread(r['speedup_vs_one_part'])}x | {r['gradient_error']:.1e} |"
            for r in size["rows"]
        ]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--parts", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--pairs", type=int, default=5, help="timed rounds")
    parser.add_argument("--number", type=int, default=3, help="calls per timing")
    args = parser.parse_args()
    torch.set_num_threads(1)
    env = _common.environment("block: 2 ranks x 1 thread; odeint: 1 and 2 threads",
                              args.allow_dirty)
    setups = [dataclasses.asdict(s) for s in SIZES]
    measured = _common.run_ranks(world, (setups, args.parts, args.pairs, args.number))[0]
    sizes = [summarise(s, m, args.parts) for s, m in zip(SIZES, measured, strict=True)]
    result = {"environment": env, "parts": args.parts, "sizes": sizes}
    print(_common.write_results(NAME, result, markdown(env, sizes)).read_text())


if __name__ == "__main__":
    main()
