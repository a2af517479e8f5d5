"""Training-step memory against the number of fine steps: torchdiffeq backprop and adjoint,
parareal with and without re-runs in the backward.

Run from the repository root:

    python benchmarks/memory.py [--steps 16 32 64 128 256 512] [--dim 64] [--batch 128]

Model: ``time_parallel.py``'s (MLP field, linear head, rk4 fine solve on [0, 1]; parareal with
N = 2 slices of steps / 2, one rk4 coarse step per slice, K = 1), training steps on one process
with one thread (and parareal on 2 ranks, per rank). Each point is a fresh process (a peak RSS is a
process's high-water mark): ``getrusage`` max RSS over two training steps, and the same minus
the RSS before the first (model and data built), the steps' own memory.

Writes docs/benchmarks/memory.{json,md,png}.
"""

from __future__ import annotations

import dataclasses
import time

import _common
import time_parallel
from _mlp import Setup

NAME = "memory"
#: (kind of ``_mlp.Setup.model``, ranks, label)
CURVES = [
    ("odeint", 1, "torchdiffeq odeint (backprop)"),
    ("odeint_adjoint", 1, "torchdiffeq odeint_adjoint"),
    ("parareal", 1, "parareal unrolled, graphs kept"),
    ("parareal_recompute", 1, "parareal unrolled, recompute"),
    ("parareal_fine_adjoint", 1, "parareal fine_adjoint (recompute)"),
    ("parareal_recompute", 2, "parareal unrolled, recompute, per rank of 2"),
]


def _name(kind: str, ranks: int) -> str:
    return kind if ranks == 1 else f"{kind}@{ranks}ranks"


def measure(setup: Setup, steps: list[int]) -> list[dict]:
    rows = []
    for total in steps:
        s = dataclasses.replace(setup, fine_steps=total // setup.slices)
        row = {"steps": total}
        for kind, ranks, _ in CURVES:
            payload = {"setup": dataclasses.asdict(s), "case": "train", "kind": kind,
                       "ranks": ranks}
            row[_name(kind, ranks)] = _common.run_fresh(time_parallel.SCRIPT, payload)
        rows.append(row)
    return rows


def markdown(env: dict, setup: Setup, rows: list[dict]) -> str:
    lines = [
        "# Training-step memory against the number of fine steps", "", _common.header(env), "",
        f"MLP field (state {setup.dim}, hidden {setup.hidden}) + linear head, batch "
        f"{setup.batch}, float32, rk4 on [0, 1]; parareal: N = {setup.slices} slices, "
        f"{setup.coarse_steps} rk4 coarse step(s) per slice, K = {setup.iters}, `unrolled` "
        "gradient unless named; one thread per process. MiB the training steps add to the "
        "process (peak RSS over two steps minus the RSS before them; for 2 ranks, the larger "
        "rank's), in a fresh process per point; peak RSS in brackets.", "",
        "| fine steps | " + " | ".join(label for _, _, label in CURVES) + " |",
        "|---|" + "---|" * len(CURVES),
    ]
    names = [_name(kind, ranks) for kind, ranks, _ in CURVES]
    for row in rows:
        cells = [f"{_common.mib(row[k]['peak'] - row[k]['before'])} "
                 f"({_common.mib(row[k]['peak'])})" for k in names]
        lines.append(f"| {row['steps']} | " + " | ".join(cells) + " |")
    first, last = rows[0], rows[-1]

    def grows(kind: str) -> str:
        low = first[kind]["peak"] - first[kind]["before"]
        high = last[kind]["peak"] - last[kind]["before"]
        return f"{_common.mib(low)} → {_common.mib(high)} MiB"

    lines += [
        "", f"From {first['steps']} to {last['steps']} steps: "
        + "; ".join(f"{label} {grows(_name(kind, ranks))}" for kind, ranks, label in CURVES)
        + ".", "",
        f"![memory against fine steps]({NAME}.png)", "",
    ]
    return "\n".join(lines)


def plot(rows: list[dict], path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    steps = [row["steps"] for row in rows]
    for (kind, ranks, label), style in zip(CURVES, ("o-", "s--", "^-", "x:", "v-.", "d-"),
                                           strict=True):
        name = _name(kind, ranks)
        ax.plot(steps, [(row[name]["peak"] - row[name]["before"]) / 2**20 for row in rows],
                style, ms=4, label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")  # flat stays flat, growth in proportion to the steps is a slope of 1
    ax.set(xlabel="fine steps (rk4, in all)", ylabel="MiB added by training steps (peak RSS)",
           title="Training-step memory")
    _common.save_figure(fig, [ax], path)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--steps", type=int, nargs="+", default=[16, 32, 64, 128, 256, 512],
                        help="fine steps in all (even)")
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=128)
    args = parser.parse_args()
    env = _common.environment("1 process x 1 thread", args.allow_dirty)
    tic = time.perf_counter()
    setup = Setup(dim=args.dim, batch=args.batch, hidden=args.hidden)
    rows = measure(setup, args.steps)
    text = markdown(env, setup, rows)
    _common.write_results(NAME, {"environment": env, "setup": dataclasses.asdict(setup),
                                 "seconds": time.perf_counter() - tic, "rows": rows}, text)
    plot(rows, _common.OUT_DIR / f"{NAME}.png")
    print(text)


if __name__ == "__main__":
    main()
