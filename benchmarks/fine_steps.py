"""Does the plain NODE need its fine steps? Final test metric against solver steps per interval.

Run from the repository root:

    python benchmarks/fine_steps.py [--tasks lynx ...] [--steps 1 2 4] [--reps 3]

Parareal can only pay where the serial solve is long *because accuracy needs it*: if a NODE
trained with one RK4 step per forecast interval forecasts as well as one trained with eight, a
user runs the one-step model and there is no long solve to parallelise. For each task (a plain
NODE config plus overrides, ``TASKS``), every number of RK4 steps per interval in ``--steps`` and
every seed 0..reps-1, this trains the whole fit (``python -m pnode_zoo fit``, no validation,
1 thread, two fits at a time on the two cores) and records the final test metric and the
training seconds. Writes docs/benchmarks/fine_steps.{json,md,png}; the tasks of the last run
that ``--tasks`` leaves out keep their results (each says when and where it was measured).
"""

from __future__ import annotations

import copy
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import _common
import torch
import yaml
from _common import (
    OUT_DIR,
    ROOT,
    fit_curve,
    fmt_spread,
    header,
    previous_tasks,
    save_figure,
    spread,
    with_overrides,
    write_results,
)

#: task -> (plain NODE config, overrides, what the variant is)
TASKS: dict[str, tuple[str, list[str], str]] = {
    "lotka_volterra_sparse": (
        "configs/lotka_volterra/node.yaml",
        ["--data.init_args.dt=0.5", "--data.init_args.horizon=8", "--trainer.max_epochs=40"],
        "configs/lotka_volterra/node.yaml observed 0.5 apart (about 7 per 3.3-unit period), "
        "forecasting 8 ahead (1.2 periods), 40 epochs",
    ),
    "lotka_volterra_sparser": (
        "configs/lotka_volterra/node.yaml",
        ["--data.init_args.dt=1.0", "--data.init_args.horizon=4", "--trainer.max_epochs=40"],
        "configs/lotka_volterra/node.yaml observed 1.0 apart (about 3 per period), "
        "forecasting 4 ahead (1.2 periods), 40 epochs",
    ),
    "gunpoint": ("configs/gunpoint/node.yaml", [],
                 "configs/gunpoint/node.yaml as shipped: a 1-d convolutional ODE-net classifier, "
                 "steps over its whole depth interval; not in the default run (about 2 hours)"),
    "lotka_volterra_irregular": (
        "configs/lotka_volterra_irregular/node.yaml", [],
        "configs/lotka_volterra_irregular/node.yaml as shipped: observed at irregular times "
        "(gaps 0.24 to 0.96), forecasting 8 ahead (about 1.5 periods), 40 epochs",
    ),
    "lynx": ("configs/lynx/node.yaml", [],
             "configs/lynx/node.yaml as shipped: the annual lynx series, 14 years ahead"),
    "lotka_volterra": ("configs/lotka_volterra/node.yaml", [],
                       "configs/lotka_volterra/node.yaml as shipped: observations 0.1 apart, "
                       "20 ahead (0.6 periods); not in the default run (about 1 hour)"),
}
STEPS = (1, 2, 4, 8, 16)
#: coarse propagators of the parareal bound (one step per slice)
COARSE = ("euler", "midpoint", "heun3", "rk4")
DEFAULT_TASKS = ("lotka_volterra_sparse", "lotka_volterra_sparser", "lotka_volterra_irregular",
                 "lynx")


def run_fit(task: str, steps: int, seed: int, workdir: Path) -> dict:
    """One fit: its final test metric and training seconds. A fit already recorded in
    ``workdir``'s ``fits.jsonl`` (by an interrupted run) is not trained again."""
    done = workdir / "fits.jsonl"
    for line in done.read_text().splitlines() if done.exists() else []:
        row = json.loads(line)
        if (row["task"], row["steps"], row["seed"]) == (task, steps, seed):
            return row
    row = train(task, steps, seed, workdir)
    with done.open("a") as file:
        file.write(json.dumps(row) + "\n")
    return row


def train(task: str, steps: int, seed: int, workdir: Path) -> dict:
    """Fit the task's plain NODE with ``steps`` RK4 steps per interval, in
    ``workdir/TASK-STEPS-SEED`` (its checkpoints under ``runs/``)."""
    config, overrides, _ = TASKS[task]
    args = [f"--seed_everything={seed}", f"--model.init_args.arch_args.steps={steps}",
            "--model.init_args.arch_args.method=rk4", *overrides]
    root = workdir / f"{task}-{steps}-{seed}"
    curve = fit_curve(config, args, 1, root / "curve.jsonl", root)
    return {"task": task, "steps": steps, "seed": seed, "metric_name": curve[-1]["metric_name"],
            "metric": curve[-1]["metric"], "train_seconds": curve[-1]["train_seconds"]}


def needed_steps(rows: list[dict], accuracy: bool) -> int:
    """The fewest steps whose median metric lies within the seed range of the best median."""
    best = (max if accuracy else min)(rows, key=lambda row: row["metric"]["median"])
    low, high = best["metric"]["min"], best["metric"]["max"]
    return min(row["steps"] for row in rows if low <= row["metric"]["median"] <= high)


def parareal_bound(task: str, steps: int, workdir: Path) -> list[dict]:
    """What parareal could gain on the plain NODE trained with ``steps`` steps per interval.

    The parareal twin (one slice per forecast interval, the same fine grid, one coarse step of
    each method in ``COARSE``, tol 1e-3) runs on one training batch with the seed-0 fit's
    trained weights (fitted again if ``workdir`` holds only its record); its counters give K and the
    f-evaluations on the critical path with one rank per slice and free messages, against
    those of the serial fine solve: an upper bound on its speed-up at any number of ranks.
    """
    from comm_model import load_config_block

    config_path, overrides, _ = TASKS[task]
    checkpoints = sorted(workdir.glob(f"{task}-{steps}-0/runs/**/last.ckpt"))
    if not checkpoints:  # recorded by a run that kept no folder
        train(task, steps, 0, workdir)
        checkpoints = sorted(workdir.glob(f"{task}-{steps}-0/runs/**/last.ckpt"))
    root = workdir / f"{task}-{steps}-0"
    config = with_overrides(yaml.safe_load((ROOT / config_path).read_text()), overrides)
    rows = []
    for coarse in COARSE:
        twin = copy.deepcopy(config)
        arch_args = {key: value for key, value in twin["model"]["init_args"]["arch_args"].items()
                     if key not in ("method", "steps", "rtol", "atol")}
        arch_args["parareal"] = {"coarse": coarse, "coarse_steps": 1, "fine": "rk4",
                                 "fine_steps": steps, "tol": 1e-3, "recompute": False}
        twin["model"]["init_args"].update(arch=f"{twin['model']['init_args']['arch']}_parareal",
                                          arch_args=arch_args)
        path = root / f"parareal-{coarse}.yaml"
        path.write_text(yaml.safe_dump(twin))
        block, x0 = load_config_block(path, checkpoints[-1])
        with torch.no_grad():
            block(x0)
        stats = block.stats
        serial, parallel = stats.serial_fine_nfe(), stats.critical_path_nfe(block.num_slices)
        rows.append({"coarse": coarse, "N": block.num_slices, "K": stats.forward_iters,
                     "converged": stats.converged, "serial_nfe": serial,
                     "critical_path_nfe": parallel, "bound": serial / parallel})
    return rows


def summarise(task: str, fits: list[dict], workdir: Path, env: dict) -> dict:
    """Per number of steps: the metric's and training time's median, min and max; the steps
    accuracy needs, and parareal's bound there; ``env``, how it was measured."""
    rows = []
    for steps in sorted({fit["steps"] for fit in fits}):
        mine = [fit for fit in fits if fit["steps"] == steps]
        rows.append({"steps": steps, "metric": spread([fit["metric"] for fit in mine]),
                     "train_seconds": spread([fit["train_seconds"] for fit in mine])})
    needed = needed_steps(rows, accuracy="acc" in fits[0]["metric_name"])
    return {"task": task, "variant": TASKS[task][2], "environment": env,
            "metric_name": fits[0]["metric_name"], "rows": rows, "fits": fits,
            "needed_steps": needed,
            "parareal_bound": parareal_bound(task, needed, workdir)}


def markdown(result: dict) -> str:
    lines = [
        "# Fine steps: the plain NODE's final test metric against RK4 steps per interval",
        "",
        f"Whole fits of the plain torchdiffeq NODE, seeds 0..{result['reps'] - 1}, 1 thread, "
        "two fits at a time; the same data, split and epochs at every number of steps. "
        "Median (min–max) over the seeds.",
        "",
    ]
    for task in result["tasks"]:
        lines += [f"## {task['task']}", "", f"{task['variant']}.", "",
                  header(task["environment"]), "",
                  f"| RK4 steps per interval | final {task['metric_name']} | training seconds |",
                  "|---|---|---|"]
        lines += [f"| {row['steps']} | {fmt_spread(row['metric'], 5)} | "
                  f"{fmt_spread(row['train_seconds'], 1)} |" for row in task["rows"]]
        lines += ["", f"Accuracy needs {task['needed_steps']} step(s) per interval (the fewest "
                  "whose median lies within the seed range of the best). The parareal twin on "
                  "that fine grid, tol 1e-3, seed 0's trained weights, one training batch, with "
                  "one rank per slice and free messages:", "",
                  "| coarse (1 step per slice) | N | K | f-evaluations: serial, critical path "
                  "| speed-up bound |", "|---|---|---|---|---|"]
        lines += [f"| {row['coarse']} | {row['N']} | {row['K']}"
                  f"{'' if row['converged'] else ' (cap)'} | {row['serial_nfe']:.0f}, "
                  f"{row['critical_path_nfe']:.0f} | {row['bound']:.2f}x |"
                  for row in task["parareal_bound"]]
        lines.append("")
    lines += ["![final test metric against steps](fine_steps.png)", ""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(5 * len(tasks), 4), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for fit in task["fits"]:
            axis.plot(fit["steps"], fit["metric"], "o", color="C0", alpha=0.4)
        axis.plot([row["steps"] for row in task["rows"]],
                  [row["metric"]["median"] for row in task["rows"]], "-", color="C0",
                  label="median over seeds")
        axis.set(xscale="log", yscale="linear" if "acc" in task["metric_name"] else "log",
                 title=task["task"],
                 xlabel="RK4 steps per forecast interval", ylabel=f"final {task['metric_name']}")
    save_figure(fig, axes[0], path)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(DEFAULT_TASKS), choices=list(TASKS))
    parser.add_argument("--steps", nargs="+", type=int, default=list(STEPS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--workdir", help="keep the fits here; a rerun skips those recorded "
                        "(default: a temporary folder)")
    args = parser.parse_args()
    jobs = [(task, steps, seed) for task in args.tasks for seed in range(args.reps)
            for steps in args.steps]
    env = _common.environment("1 thread per fit, two fits at a time", args.allow_dirty)
    with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(2) as pool:
        workdir = Path(args.workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        fits = list(pool.map(lambda job: run_fit(*job, workdir), jobs))
        tasks = {task: summarise(task, [f for f in fits if f["task"] == task], workdir, env)
                 for task in args.tasks}
    kept = previous_tasks("fine_steps", args.reps)
    result = {"environment": env, "reps": args.reps,
              "tasks": [tasks.get(name) or kept[name] for name in TASKS
                        if name in tasks or name in kept]}
    print(write_results("fine_steps", result, markdown(result)).read_text())
    plot(result, OUT_DIR / "fine_steps.png")


if __name__ == "__main__":
    main()
