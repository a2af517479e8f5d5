"""Time to accuracy: whole fits of the plain NODE and its parareal twin, on 1 and 2 ranks.

Run from the repository root:

    python benchmarks/time_to_accuracy.py [--tasks lotka_volterra_irregular ...] [--reps 3]

For each task (``configs/<task>/node.yaml`` and ``node_parareal.yaml``) and each repetition r
(seed r), in this order:
  a1: the plain torchdiffeq NODE, one process, 1 thread;
  a2: the same with 2 threads ((a) is the better of a1 and a2, per repetition);
  b:  the parareal NODE, one process, 2 threads;
  c:  the parareal NODE with ``--trainer.strategy=time_parallel`` on 2 ranks x 1 thread;
  d:  as c, but a fixed K = 1 (``tol: 0, max_iters: 1``) with one RK4 coarse step per slice:
      the only parareal that can beat its serial fine solve on 2 ranks (at most P/K = 2x), and
      a different network from the fine NODE (see the README's performance section).
Every fit runs the config's epochs without validation; after each epoch the
``LearningCurve`` callback evaluates the test split (excluded from the timing). The target of a
task is (a)'s final test metric, the worst over the repetitions (so it lies within (a)'s seed
spread); each run's time to accuracy is its training time until its test metric first reaches
the target. Reported: medians over repetitions of the times and final metrics, speedups
against (a) with min and max over repetitions. Writes docs/benchmarks/time_to_accuracy.{json,
md,png}; the tasks of the last run that ``--tasks`` leaves out keep their results (each says
when and where it was measured).
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

import _common
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

TASKS = ("lotka_volterra", "gunpoint", "lotka_volterra_irregular")
TWO_RANKS = ["--trainer.strategy=time_parallel", "--trainer.accelerator=cpu",
             "--trainer.devices=2"]
#: run d's changes to the parareal config
FIXED_K = [f"--model.init_args.arch_args.parareal.{key}" for key in
           ("tol=0.0", "max_iters=1", "coarse=rk4", "coarse_steps=1")]
RUNS = {  # name: (config, threads per process, extra arguments, config overrides)
    "a1": ("node", 1, [], []),
    "a2": ("node", 2, [], []),
    "b": ("node_parareal", 2, [], []),
    "c": ("node_parareal", 1, TWO_RANKS, []),
    "d": ("node_parareal", 1, TWO_RANKS, FIXED_K),
}
LABELS = {"a": "(a) plain NODE, best threads", "b": "(b) parareal, 1 process",
          "c": "(c) parareal, 2 ranks", "d": "(d) parareal K = 1, 2 ranks"}


def fit(task: str, run: str, seed: int, workdir: Path) -> list[dict]:
    """One fit; its learning curve (one row per epoch)."""
    config, threads, extra, overrides = RUNS[run]
    path = f"configs/{task}/{config}.yaml"
    if overrides:  # a derived config: the CLI would replace the parareal dict, not merge into it
        derived = workdir / f"{task}-{run}.yaml"
        derived.write_text(yaml.safe_dump(with_overrides(
            yaml.safe_load((ROOT / path).read_text()), overrides)))
        path = str(derived)
    return fit_curve(path, [f"--seed_everything={seed}", *extra], threads,
                     workdir / f"{task}-{run}-{seed}.jsonl", workdir)


def reached(curve: list[dict], target: float) -> float:
    """Training seconds until the test metric first reaches ``target`` (inf: never)."""
    better = (lambda m: m >= target) if curve[0]["metric_name"] == "test/acc" else (
        lambda m: m <= target)
    return next((row["train_seconds"] for row in curve if better(row["metric"])), float("inf"))


def summarise(task: str, curves: dict[str, list[list[dict]]], env: dict) -> dict:
    """Target, times to it, final metrics and speedups of one task."""
    reps = len(curves["a1"])
    # (a): per repetition the faster of 1 and 2 threads
    best = [min(("a1", "a2"), key=lambda run, i=i: curves[run][i][-1]["train_seconds"])
            for i in range(reps)]
    curves["a"] = [curves[run][i] for i, run in enumerate(best)]
    accuracy = curves["a"][0][-1]["metric_name"] == "test/acc"
    finals = [curve[-1]["metric"] for curve in curves["a"]]
    target = min(finals) if accuracy else max(finals)
    rows = {}
    for run, per_rep in curves.items():
        times = [reached(curve, target) for curve in per_rep]
        rows[run] = {
            "time_to_target_median": statistics.median(times),
            "total_train_seconds_median": statistics.median(c[-1]["train_seconds"]
                                                           for c in per_rep),
            "final_metric_median": statistics.median(c[-1]["metric"] for c in per_rep),
            "final_metrics": [c[-1]["metric"] for c in per_rep],
            "times_to_target": times,
        }
    for run in ("b", "c", "d"):
        ratios = [a / x for a, x in zip(rows["a"]["times_to_target"],
                                         rows[run]["times_to_target"], strict=True)]
        rows[run]["speedup"] = spread(ratios)
    return {"task": task, "environment": env, "metric": curves["a"][0][-1]["metric_name"],
            "target": target, "a_threads": best, "runs": rows, "curves": curves}


def markdown(result: dict) -> str:
    reps = result["reps"]
    lines = [
        "# Time to accuracy: plain NODE (torchdiffeq) against parareal, 1 and 2 ranks",
        "",
        f"{reps} repetitions (seeds 0..{reps - 1}), runs alternating a1 a2 b c d. Times are "
        "training seconds (test evaluation excluded) until the test metric first reaches the "
        "target: (a)'s final metric, the worst over the seeds. (a) = plain NODE, the better of "
        "1 and 2 threads; (b) = parareal NODE, 1 process, 2 threads; (c) = parareal NODE, "
        "time_parallel, 2 ranks x 1 thread; (d) = as (c) with a fixed K = 1 and one RK4 coarse "
        "step per slice (tol 0, max_iters 1: a different network). Measured; medians "
        "(speedup: median (min-max) over the seeds; *never*: the target was not reached).",
        "",
        "| task | target | (a) time, final | (b) time, final, speedup | (c) time, final, speedup "
        "| (d) time, final, speedup |",
        "|---|---|---|---|---|---|",
    ]
    for task in result["tasks"]:
        cells = [_cell(task, run) for run in ("a", "b", "c", "d")]
        lines.append(f"| {task['task']} | {task['metric']} {task['target']:.4g} | "
                     + " | ".join(cells) + " |")
    lines += ["", "Where each task was measured (–: a run that did not exist yet):", ""]
    lines += [f"- {task['task']}: {header(task['environment'])}" for task in result["tasks"]]
    lines += ["", "![test metric against training time](time_to_accuracy.png)", ""]
    return "\n".join(lines)


def _cell(task: dict, run: str) -> str:
    row = task["runs"].get(run)
    if row is None:
        return "–"
    time = row["time_to_target_median"]
    text = (f"{'never' if time == float('inf') else f'{time:.1f} s'}, {task['metric']} "
            f"{row['final_metric_median']:.4g}")
    return text + (f", {fmt_spread(row['speedup'])}x" if "speedup" in row else "")


def plot(result: dict, path: Path, labels: dict[str, str] = LABELS) -> None:
    """Each task's learning curves, one colour per run of ``labels``, and its target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = result["tasks"]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.5), squeeze=False)
    for axis, task in zip(axes[0], tasks, strict=True):
        for color, (run, label) in enumerate(labels.items()):
            for i, curve in enumerate(task["curves"].get(run, [])):
                axis.plot([r["train_seconds"] for r in curve], [r["metric"] for r in curve],
                          color=f"C{color}", alpha=0.8, label=label if i == 0 else None)
        axis.axhline(task["target"], color="grey", linestyle=":", label="target")
        metric = task.get("metric", "test/acc")
        if metric == "test/mse":
            axis.set_yscale("log")
        axis.set(title=task["task"], xlabel="training seconds", ylabel=metric)
    save_figure(fig, axes[0], path)


def main() -> None:
    parser = _common.parser(__doc__)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    env = _common.environment("(a) 1 and 2 threads, (b) 2 threads, (c, d) 2 ranks x 1 thread",
                              args.allow_dirty)
    tasks = {}
    with tempfile.TemporaryDirectory() as tmp:
        for task in args.tasks:
            curves: dict[str, list] = {run: [] for run in RUNS}
            for seed in range(args.reps):
                for run in RUNS:
                    curves[run].append(fit(task, run, seed, Path(tmp)))
            tasks[task] = summarise(task, curves, env)
    kept = previous_tasks("time_to_accuracy", args.reps)
    result = {"environment": env, "reps": args.reps,
              "tasks": [tasks.get(name) or kept[name] for name in TASKS
                        if name in tasks or name in kept]}
    print(write_results("time_to_accuracy", result, markdown(result)).read_text())
    plot(result, OUT_DIR / "time_to_accuracy.png")


if __name__ == "__main__":
    main()
